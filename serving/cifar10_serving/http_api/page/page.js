// The web page's behaviour. Images picked, dropped or pasted are sent one per request to
// POST v1/classify (multipart), so each gets its own answer or error, from the model chosen
// among those served (v1/models; the default model's newest version at first); the server's
// readiness (v2/health/ready) is shown and polled. Every URL is relative: the page works
// behind a proxy that serves it under a path prefix.
"use strict";

const HEALTH_EVERY_MS = 5000;
const IN_FLIGHT = 4; // requests at once: browsers open about six connections per server
const MULTIPART_OVERHEAD = 4096; // bytes a form adds around a file, at most

const $ = (id) => document.getElementById(id);
const maxBodyBytes = Number(document.querySelector('meta[name="max-body-bytes"]').content) || Infinity;
const state = {
  labels: [], models: [], model: null, modelsAsked: false, health: "", items: [], queue: [], running: 0,
};

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function percent(p) {
  return (100 * p).toFixed(1) + " %";
}

function size(bytes) {
  return bytes >= 1048576 ? (bytes / 1048576).toFixed(1) + " MiB" : Math.ceil(bytes / 1024) + " KiB";
}

// -- the models and the server's health -----------------------------------------------------

function accuracyOf(model) {
  const accuracy = model.accuracy.test || model.accuracy.validation;
  return accuracy ? { ...accuracy, part: model.accuracy.test ? "test" : "validation" } : null;
}

// The models served, in the picker; the one chosen stays chosen while it is served (a new
// version of it replaces it), else the default model's newest version is.
async function showModels() {
  if (state.modelsAsked) return;
  state.modelsAsked = true;
  let list;
  try {
    const response = await fetch("v1/models", { cache: "no-store" });
    if (!response.ok) return;
    list = await response.json();
  } catch (error) {
    return; // the health line says the server is not reachable
  } finally {
    state.modelsAsked = false;
  }
  const was = state.model;
  const chosen = (was && list.models.find((m) => m.name === was.name && m.version === was.version)) ||
    (was && list.models.find((m) => m.name === was.name)) ||
    list.models.find((m) => m.name === list.default_model) || list.models[0];
  state.models = list.models;
  $("model-choice").replaceChildren(...list.models.map((model, index) => {
    const accuracy = accuracyOf(model);
    const option = element("option", "", `${model.name} ${model.version}` +
      (accuracy ? ` (${(100 * accuracy.accuracy).toFixed(1)} %)` : ""));
    option.value = String(index);
    option.selected = model === chosen;
    return option;
  }));
  choose(chosen);
}

function choose(model) {
  state.model = model;
  const accuracy = accuracyOf(model);
  const figure = accuracy
    ? `${(100 * accuracy.accuracy).toFixed(2)} % accurate on its ${accuracy.images.toLocaleString("en")} ${accuracy.part} images`
    : "no accuracy in its metadata";
  $("model").textContent = `Model ${model.name}, version ${model.version}: ${figure}`;
}

// The chosen model by name, and by version only where several of its versions are served:
// a model rolled out to a new version keeps answering the page.
function classifyUrl() {
  const model = state.model;
  if (!model) return "v1/classify";
  const query = new URLSearchParams({ model: model.name });
  if (state.models.filter((m) => m.name === model.name).length > 1) query.set("version", model.version);
  return `v1/classify?${query}`;
}

function setHealth(health) {
  if (health === state.health) return; // role=status announces changes only
  state.health = health;
  const words = {
    ready: "Ready",
    "not-ready": "Not ready: the server is starting or shutting down",
    unreachable: "Server not reachable: is it running?",
  };
  $("health").dataset.state = health;
  $("health-text").textContent = words[health];
}

async function checkHealth() {
  try {
    const response = await fetch("v2/health/ready", { cache: "no-store" });
    setHealth(response.ok ? "ready" : "not-ready");
    if (response.ok && !state.model) showModels();
  } catch (error) {
    setHealth("unreachable");
  }
}

// -- images -------------------------------------------------------------------------------

function addFiles(files) {
  const list = Array.from(files);
  if (list.length === 0) {
    $("message").textContent = "No file in what was dropped or pasted: drop or paste an image.";
    return;
  }
  $("message").textContent = "";
  for (const file of list) {
    const item = { file, url: URL.createObjectURL(file), result: null, card: null };
    item.card = card(item);
    $("results").append(item.card);
    state.items.push(item);
    state.queue.push(item);
  }
  pump();
}

function card(item) {
  const li = element("li", "result");
  li.dataset.state = "waiting";
  li.setAttribute("aria-busy", "true");
  const img = element("img");
  img.src = item.url;
  img.alt = "";
  img.addEventListener("error", () => img.classList.add("broken")); // not an image the browser shows
  const summary = element("div", "summary");
  summary.append(element("h3", "name", item.file.name || "pasted image"),
                 element("p", "verdict"), element("p", "by"), element("p", "status", "Classifying…"));
  li.append(img, summary, element("ol", "bars"));
  return li;
}

function pump() {
  while (state.running < IN_FLIGHT && state.queue.length > 0) {
    const item = state.queue.shift();
    state.running += 1;
    classify(item).finally(() => {
      state.running -= 1;
      pump();
    });
  }
}

async function classify(item) {
  if (item.file.size + MULTIPART_OVERHEAD > maxBodyBytes) {
    fail(item, `Too large: ${size(item.file.size)}, and the server takes at most ` +
               `${size(maxBodyBytes)} in one request.`);
    return;
  }
  const form = new FormData();
  form.append("images", item.file, item.file.name || "pasted image");
  let response;
  try {
    response = await fetch(classifyUrl(), { method: "POST", body: form });
  } catch (error) {
    setHealth("unreachable");
    fail(item, "The server could not be reached: is it running? Try again once it is.");
    return;
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch (error) {
    answer = null; // a proxy's HTML error page, say: the status still says what happened
  }
  if (!response.ok) {
    if (response.status === 404) showModels(); // the model chosen is no longer served
    fail(item, describeRefusal(response, answer));
    return;
  }
  const by = answer.model;
  if (!state.model || state.model.name !== by.name || state.model.version !== by.version) showModels();
  item.card.querySelector(".by").textContent = `by ${by.name} ${by.version}`;
  state.labels = answer.labels;
  const result = answer.results[0];
  if (result.error) {
    fail(item, describeImageError(result.error));
    return;
  }
  item.result = result;
  item.card.dataset.state = "done";
  item.card.removeAttribute("aria-busy");
  item.card.querySelector(".status").textContent = "";
  render(item);
}

function describeImageError(text) {
  const said = text.replace(/^image \d+: /, "");
  if (/cannot decode|bytes are empty/.test(said)) return `Not an image the server can read: ${said}`;
  if (/exceeds|over the limit|decompression bomb/.test(said)) return `Too large: ${said}`;
  return `Not classified: ${said}`;
}

function describeRefusal(response, answer) {
  const said = answer && typeof answer.error === "string" ? answer.error : "";
  const retry = response.headers.get("Retry-After");
  const later = retry ? `try again in ${retry} s.` : "try again shortly.";
  switch (response.status) {
    case 400: return describeImageError(said);
    case 404: return `The model was not found: ${said}`;
    case 413: return `Too large for the server: ${said}`;
    case 429: return `The server is busy: ${later}`;
    case 503: return `The server is starting or shutting down: ${later}`;
    case 504: return "The server took too long to answer: try again.";
    default: return `The server answered ${response.status}${said ? ": " + said : "."}`;
  }
}

function fail(item, words) {
  item.card.dataset.state = "error";
  item.card.removeAttribute("aria-busy");
  item.card.querySelector(".status").textContent = words;
}

function render(item) {
  const probabilities = item.result.probabilities;
  const shown = Number($("top-k").value);
  const order = probabilities.map((_, i) => i)
    .sort((a, b) => probabilities[b] - probabilities[a]).slice(0, shown);
  const verdict = item.card.querySelector(".verdict");
  verdict.replaceChildren(element("strong", "label", state.labels[order[0]]), " ",
                          element("span", "value", percent(probabilities[order[0]])));
  const bars = item.card.querySelector(".bars");
  bars.replaceChildren(...order.map((i) => {
    const li = element("li");
    const bar = element("span", "bar");
    bar.setAttribute("aria-hidden", "true");
    const fill = element("span");
    fill.style.width = percent(probabilities[i]).replace(" ", "");
    bar.append(fill);
    li.append(element("span", "label", state.labels[i]), bar,
              element("span", "value", percent(probabilities[i])));
    return li;
  }));
}

function clear() {
  for (const item of state.items) URL.revokeObjectURL(item.url);
  state.items = [];
  state.queue = [];
  $("results").replaceChildren();
  $("message").textContent = "";
}

// -- wiring -------------------------------------------------------------------------------

$("files").addEventListener("change", (event) => {
  addFiles(event.target.files);
  event.target.value = ""; // picking the same file again classifies it again
});
$("clear").addEventListener("click", clear);
$("model-choice").addEventListener("change", (event) => {
  choose(state.models[Number(event.target.value)]);
});
$("top-k").addEventListener("change", () => {
  for (const item of state.items) if (item.result) render(item);
});
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.addEventListener("dragleave", (event) => {
  if (event.relatedTarget === null) document.body.classList.remove("dragging");
});
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  addFiles(event.dataTransfer.files);
});
document.addEventListener("paste", (event) => {
  const files = Array.from(event.clipboardData.items)
    .filter((entry) => entry.kind === "file").map((entry) => entry.getAsFile());
  if (files.length > 0) {
    event.preventDefault();
    addFiles(files);
  }
});

checkHealth();
setInterval(checkHealth, HEALTH_EVERY_MS);
