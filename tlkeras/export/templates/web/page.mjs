// What the image and text pages share: bundle.json, the variant picker, the status line, and the
// answer (top classes with scores, "unknown" under the bundle's threshold).
const $ = (id) => document.getElementById(id);

export function startPage(create) {
  let config = null;
  let classifier = null;
  let current = null;

  function say(text, error = false) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  }

  async function loadVariant(name) {
    const entry = config.variants[name];
    if (!entry) throw new Error(`this bundle has no variant ${name}; it has ${Object.keys(config.variants).join(", ")}`);
    say(`Loading ${name} (${Math.round(entry.bytes / 1024)} KB)…`);
    if (classifier) classifier.close();
    classifier = null;
    classifier = await create(config, entry, new URL(".", location.href));
    current = name;
    $("variant").value = name;
    say(`Ready: ${name}.`);
    return name;
  }

  function render(answer) {
    const shown = answer.categories.slice(0, 3);
    const best = answer.unknown ? "unknown" : shown[0]?.name ?? "unknown";
    const why = answer.unknown && shown[0]
      ? ` (best guess ${shown[0].name} at ${shown[0].score.toFixed(3)}, under the bundle's threshold ${config.threshold.toFixed(3)})` : "";
    const head = document.createElement("p");
    head.className = "answer";
    head.textContent = best + why;
    const list = document.createElement("ol");
    for (const c of shown) {
      const item = document.createElement("li");
      item.textContent = `${c.name} ${c.score.toFixed(3)}`;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.round(c.score * 10)}rem`;
      item.append(bar);
      list.append(item);
    }
    $("result").replaceChildren(head, list);
    say(`${answer.variant}: ${answer.ms.toFixed(1)} ms in this browser.`);
  }

  // Runs one classification (``run(classifier)`` returns MediaPipe's result) and shows it.
  function show(run) {
    if (!classifier) throw new Error("the model is not loaded yet");
    const start = performance.now();
    const result = run(classifier);
    const ms = performance.now() - start;
    const categories = (result.classifications[0]?.categories ?? []).map((c) => ({
      index: c.index, name: c.categoryName || config.labels[c.index], score: c.score,
    }));
    const top = categories[0];
    const unknown = config.threshold !== null && (!top || top.score < config.threshold);
    const answer = { variant: current, categories, top: top ? top.index : -1, unknown, ms };
    render(answer);
    return answer;
  }

  async function main() {
    const response = await fetch("bundle.json");
    if (!response.ok) throw new Error(`bundle.json is missing (${response.status}); re-export with --web`);
    config = await response.json();
    $("title").textContent = config.name;
    $("about").textContent = `${config.labels.length} classes: ${config.labels.join(", ")}. ` +
      `MediaPipe Tasks for Web ${config.mediapipe.version}, in this browser.`;
    for (const name of Object.keys(config.variants)) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = `${name} (${Math.round(config.variants[name].bytes / 1024)} KB)`;
      $("variant").append(option);
    }
    $("variant").addEventListener("change", (e) => loadVariant(e.target.value).catch((err) => say(err.message, true)));
    const asked = new URLSearchParams(location.search).get("variant");
    return loadVariant(asked || config.recommended);
  }

  const ready = main().catch((err) => {
    say(`Could not load the model: ${err.message}`, true);
    throw err;
  });
  return { ready, loadVariant, say, show, clear: () => $("result").replaceChildren() };
}
