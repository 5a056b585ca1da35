// The page of a tlkeras bundle: MediaPipe Tasks for Web's ImageClassifier on the bundle's .tflite.
// bundle.json (written by tlkeras.export) names the variants, labels, unknown threshold and the
// MediaPipe files copied next to this page. Everything is fetched from this server.
import { ImageClassifier } from "./mediapipe/vision_bundle.mjs";

const $ = (id) => document.getElementById(id);
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
  const here = new URL(".", location.href);
  classifier = await ImageClassifier.createFromOptions(
    {
      wasmLoaderPath: new URL(config.mediapipe.loader, here).href,
      wasmBinaryPath: new URL(config.mediapipe.binary, here).href,
    },
    {
      baseOptions: { modelAssetPath: new URL("../" + entry.file, here).href, delegate: "CPU" },
      runningMode: "IMAGE",
      maxResults: config.labels.length,
      // Every class comes back; the bundle's threshold is applied below, so the page can show it.
      scoreThreshold: 1e-9,
    });
  current = name;
  $("variant").value = name;
  say(`Ready: ${name}. Drop or pick an image.`);
  return name;
}

function classify(source) {
  if (!classifier) throw new Error("the model is not loaded yet");
  const start = performance.now();
  const result = classifier.classify(source);
  const ms = performance.now() - start;
  const categories = (result.classifications[0]?.categories ?? []).map((c) => ({
    index: c.index, name: c.categoryName || config.labels[c.index], score: c.score,
  }));
  const top = categories[0];
  const unknown = config.threshold !== null && (!top || top.score < config.threshold);
  return { variant: current, categories, top: top ? top.index : -1, unknown, ms };
}

function render(answer) {
  const shown = answer.categories.slice(0, 3);
  const best = answer.unknown ? "unknown" : shown[0]?.name ?? "unknown";
  const why = answer.unknown && shown[0]
    ? ` (best guess ${shown[0].name} at ${shown[0].score.toFixed(3)}, under the bundle's threshold ${config.threshold.toFixed(3)})` : "";
  $("result").innerHTML = "";
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
  $("result").append(head, list);
  say(`${answer.variant}: ${answer.ms.toFixed(1)} ms in this browser.`);
}

// The one path every image takes: a dropped or picked file, or a data URL in tests.
async function handleBlob(blob) {
  let bitmap;
  try {
    // No colour-space conversion: the same pixels as the Python decoder gives LiteRT.
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (err) {
    const kind = blob.type || "unknown type";
    say(`This file (${kind}, ${blob.size} bytes) is not an image this browser can decode; try a JPEG or PNG.`, true);
    $("result").innerHTML = "";
    return { error: "decode", type: kind };
  }
  const canvas = $("preview");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  canvas.style.display = "block";
  try {
    const answer = classify(bitmap);
    render(answer);
    return answer;
  } finally {
    bitmap.close();
  }
}

async function classifyDataUrl(url) {
  return handleBlob(await (await fetch(url)).blob());
}

async function startCamera() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    const video = $("camera");
    video.srcObject = stream;
    video.style.display = "block";
    await video.play();
    $("capture").hidden = false;
  } catch (err) {
    say(`No camera: ${err.message}. The camera needs http://localhost or https, and your permission.`, true);
  }
}

function wire() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) handleBlob(file);
  });
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) handleBlob(e.target.files[0]); });
  $("camera-button").addEventListener("click", startCamera);
  $("capture").addEventListener("click", () => render(classify($("camera"))));
  $("variant").addEventListener("change", (e) => loadVariant(e.target.value).catch((err) => say(err.message, true)));
}

async function main() {
  const response = await fetch("bundle.json");
  if (!response.ok) throw new Error(`bundle.json is missing (${response.status}); re-export with --web`);
  config = await response.json();
  $("title").textContent = config.name;
  $("about").textContent = `${config.labels.length} classes: ${config.labels.join(", ")}. MediaPipe Tasks for Web ${config.mediapipe.version}, in this browser.`;
  for (const name of Object.keys(config.variants)) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = `${name} (${Math.round(config.variants[name].bytes / 1024)} KB)`;
    $("variant").append(option);
  }
  wire();
  const asked = new URLSearchParams(location.search).get("variant");
  return loadVariant(asked || config.recommended);
}

const ready = main().catch((err) => {
  say(`Could not load the model: ${err.message}`, true);
  throw err;
});
window.tlkeras = { ready, loadVariant, handleBlob, classifyDataUrl, classify };
