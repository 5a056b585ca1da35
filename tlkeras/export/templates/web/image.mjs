// The page of a tlkeras image bundle: MediaPipe Tasks for Web's ImageClassifier on the bundle's
// .tflite. bundle.json names the variants, labels, threshold and the MediaPipe files copied next to
// this page. Everything is fetched from this server.
import { ImageClassifier } from "./mediapipe/vision_bundle.mjs";
import { startPage } from "./page.mjs";

const $ = (id) => document.getElementById(id);
const page = startPage(async (config, entry, here) => ImageClassifier.createFromOptions(
  {
    wasmLoaderPath: new URL(config.mediapipe.loader, here).href,
    wasmBinaryPath: new URL(config.mediapipe.binary, here).href,
  },
  {
    baseOptions: { modelAssetPath: new URL("../" + entry.file, here).href, delegate: "CPU" },
    runningMode: "IMAGE",
    maxResults: config.labels.length,
    scoreThreshold: 1e-9, // every class; the bundle's threshold is applied by the page
  }));

// The one path every image takes: a dropped or picked file, or a data URL in tests.
async function handleBlob(blob) {
  let bitmap;
  try {
    // No colour-space conversion: the same pixels as the Python decoder gives LiteRT.
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch (err) {
    const kind = blob.type || "unknown type";
    page.say(`This file (${kind}, ${blob.size} bytes) is not an image this browser can decode; try a JPEG or PNG.`, true);
    page.clear();
    return { error: "decode", type: kind };
  }
  const canvas = $("preview");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  canvas.style.display = "block";
  try {
    return page.show((classifier) => classifier.classify(bitmap));
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
    page.say(`No camera: ${err.message}. The camera needs http://localhost or https, and your permission.`, true);
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) handleBlob(e.dataTransfer.files[0]);
});
$("file").addEventListener("change", (e) => { if (e.target.files[0]) handleBlob(e.target.files[0]); });
$("camera-button").addEventListener("click", startCamera);
$("capture").addEventListener("click", () => page.show((classifier) => classifier.classify($("camera"))));
window.tlkeras = { ready: page.ready, loadVariant: page.loadVariant, handleBlob, classifyDataUrl };
