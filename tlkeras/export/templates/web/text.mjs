// The page of a tlkeras text bundle: MediaPipe Tasks for Web's TextClassifier on the bundle's .tflite
// (the tokenizer runs from the model's metadata). bundle.json names the variants, labels, threshold
// and the MediaPipe files copied next to this page. Everything is fetched from this server.
import { TextClassifier } from "./mediapipe/text_bundle.mjs";
import { startPage } from "./page.mjs";

const page = startPage(async (config, entry, here) => TextClassifier.createFromOptions(
  {
    wasmLoaderPath: new URL(config.mediapipe.loader, here).href,
    wasmBinaryPath: new URL(config.mediapipe.binary, here).href,
  },
  {
    baseOptions: { modelAssetPath: new URL("../" + entry.file, here).href, delegate: "CPU" },
    maxResults: config.labels.length,
    scoreThreshold: 1e-9, // every class; the bundle's threshold is applied by the page
  }));

// The one path every text takes: the button, or a call from a test.
function classifyText(text) {
  document.getElementById("text").value = text;
  if (!text.trim()) {
    page.say("Type or paste a text first.", true);
    return { error: "empty" };
  }
  return page.show((classifier) => classifier.classify(text));
}

document.getElementById("go").addEventListener("click", () => classifyText(document.getElementById("text").value));
window.tlkeras = { ready: page.ready, loadVariant: page.loadVariant, classifyText };
