// The demo page: pick or drop an image, give labels (or a label set), POST /v1/classify, draw the scores.
// A gateway serving several models gets a model picker (from GET /v1/models); its choice goes with classify.
// Plain browser JavaScript, no build step; everything it calls is this server's own /v1 API.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    form: $("form"),
    drop: $("drop"),
    image: $("image"),
    preview: $("preview"),
    labelSet: $("label-set"),
    labels: $("labels"),
    template: $("template"),
    apiKey: $("api-key"),
    classify: $("classify"),
    model: $("model"),
    modelChoice: $("model-choice"),
    modelPicker: $("model-picker"),
    error: $("error"),
    top: $("top"),
    topLabel: $("top-label"),
    results: $("results"),
    latency: $("latency"),
  };
  const KEY_STORAGE = "lit.apiKey"; // sessionStorage only: gone when the tab closes
  let file = null;
  let previewUrl = null;
  let models = []; // every served model, as GET /v1/models lists them

  function authHeaders() {
    const key = els.apiKey.value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  // fetch() a /v1 route; an error answer becomes an Error carrying the API's own message.
  async function api(path, init = {}) {
    const response = await fetch(path, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      const detail = body && body.error;
      const error = new Error(detail && detail.message ? detail.message : `HTTP ${response.status} from ${path}`);
      error.status = response.status;
      error.code = detail ? detail.code : "http_error";
      throw error;
    }
    return body;
  }

  function showError(error) {
    const code = error.code ? ` (${error.status || ""} ${error.code})` : "";
    els.error.textContent = `${error.message}${code}`;
    els.error.hidden = false;
    if (error.status === 401) els.apiKey.closest("details").open = true;
  }

  function clearError() {
    els.error.hidden = true;
    els.error.textContent = "";
  }

  function describe(model) {
    if (model.state === "ready") return `${model.name} version ${model.version} (${model.backend}, ${model.loss})`;
    if (model.state === "unloaded") return `${model.name} (unloaded: it loads on its first request)`;
    return `${model.name} (${model.state}${model.error ? `: ${model.error}` : ""})`;
  }

  // Show the chosen model's description; data-name and data-version say which one (and version) it is.
  function showModel() {
    const chosen = models.find((m) => m.name === els.modelPicker.value) || models[0];
    if (!chosen) return;
    els.model.textContent = describe(chosen);
    els.model.dataset.name = chosen.name;
    els.model.dataset.version = chosen.version == null ? "" : String(chosen.version);
  }

  // The picker lists every model (a failed one cannot be chosen); it is hidden when there is only one.
  function fillModelPicker(defaultName) {
    const chosen = els.modelPicker.value;
    els.modelPicker.replaceChildren(
      ...models.map((m) => {
        const text = `${m.name}${m.name === defaultName ? " (default)" : ""}${m.state === "ready" ? "" : ` – ${m.state}`}`;
        const option = new Option(text, m.name);
        option.disabled = m.state === "failed";
        return option;
      }),
    );
    const keep = models.some((m) => m.name === chosen && m.state !== "failed");
    els.modelPicker.value = keep ? chosen : defaultName;
    els.modelChoice.hidden = models.length < 2;
  }

  async function loadModel() {
    try {
      const info = await api("/v1/models");
      models = info.models && info.models.length ? info.models : [info];
      fillModelPicker(info.default || info.name);
      showModel();
    } catch (error) {
      els.model.textContent = "unavailable";
      showError(error);
    }
  }

  // The model the request names: none (the gateway's default) unless the picker is shown.
  function chosenModel() {
    return els.modelChoice.hidden ? "" : els.modelPicker.value;
  }

  async function loadLabelSets() {
    let sets = [];
    try {
      sets = await api("/v1/label-sets");
    } catch {
      return; // loadModel() already shows why the API refused
    }
    const chosen = els.labelSet.value;
    els.labelSet.replaceChildren(new Option("Type labels below", ""));
    for (const set of sets) {
      els.labelSet.append(new Option(`${set.name} (${set.count} labels)`, set.name));
    }
    els.labelSet.value = sets.some((s) => s.name === chosen) ? chosen : "";
    syncLabelInputs();
  }

  function syncLabelInputs() {
    els.labels.disabled = els.labelSet.value !== "";
  }

  function setFile(chosen) {
    if (!chosen) return;
    file = chosen;
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(chosen);
    els.preview.src = previewUrl;
    els.preview.alt = `Chosen image: ${chosen.name}`;
    els.preview.hidden = false;
    els.drop.classList.add("has-image");
  }

  function typedLabels() {
    return els.labels.value
      .split("\n")
      .map((label) => label.trim())
      .filter((label) => label !== "");
  }

  function render(predictions) {
    const best = predictions[0];
    els.topLabel.textContent = best ? best.label : "";
    els.top.hidden = !best;
    const rows = predictions.map((p) => {
      const row = document.createElement("li");
      row.className = "result";
      row.dataset.label = p.label;
      row.dataset.score = String(p.score);
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = p.label;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${Math.max(0, Math.min(1, p.score)) * 100}%`;
      bar.append(fill);
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = `${(100 * p.score).toFixed(1)}%`;
      row.append(name, bar, score);
      return row;
    });
    els.results.replaceChildren(...rows);
    // On a phone the scores sit below the form: bring them into view.
    const box = els.results.closest("section").getBoundingClientRect();
    if (box.top > window.innerHeight || box.bottom < 0) els.top.scrollIntoView({ block: "start" });
  }

  async function classify(event) {
    event.preventDefault();
    clearError();
    const labelSet = els.labelSet.value;
    const labels = typedLabels();
    if (!file) return showError(new Error("Pick or drop an image first."));
    if (!labelSet && labels.length === 0) return showError(new Error("Type at least one label (one per line)."));
    const form = new FormData();
    form.append("images", file, file.name || "image");
    if (labelSet) form.append("label_set", labelSet);
    else for (const label of labels) form.append("labels", label);
    const template = els.template.value.trim();
    if (template) form.append("templates", template);
    const model = chosenModel();
    if (model) form.append("model", model);

    els.classify.disabled = true;
    els.classify.textContent = "Classifying…";
    els.latency.textContent = "…";
    const began = performance.now();
    try {
      const answer = await api("/v1/classify", { method: "POST", body: form });
      const ms = performance.now() - began;
      render(answer.results[0].predictions);
      els.latency.textContent = `${ms.toFixed(0)} ms (round trip from this browser, model ${answer.model.name} version ${answer.model.version})`;
      els.latency.dataset.ms = ms.toFixed(1);
      const used = models.find((m) => m.name === answer.model.name);
      if (used && used.state !== "ready") loadModel(); // it loaded for this request: show its version now
    } catch (error) {
      els.latency.textContent = "–";
      els.results.replaceChildren(); // no scores from an earlier image beside this error
      els.top.hidden = true;
      showError(error);
    } finally {
      els.classify.disabled = false;
      els.classify.textContent = "Classify";
    }
  }

  // Drag and drop onto the drop zone (the file input underneath works too).
  for (const name of ["dragenter", "dragover"]) {
    els.drop.addEventListener(name, (event) => {
      event.preventDefault();
      els.drop.classList.add("dragging");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    els.drop.addEventListener(name, () => els.drop.classList.remove("dragging"));
  }
  els.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const dropped = event.dataTransfer && event.dataTransfer.files[0];
    if (dropped) {
      setFile(dropped);
      try {
        els.image.files = event.dataTransfer.files;
      } catch {
        // older browsers: the dropped file is still used
      }
    }
  });
  els.image.addEventListener("change", () => setFile(els.image.files[0]));
  els.preview.addEventListener("error", () => {
    els.preview.hidden = true; // not something the browser can show (e.g. TIFF); the server may still read it
  });
  els.labelSet.addEventListener("change", syncLabelInputs);
  els.modelPicker.addEventListener("change", showModel);
  els.form.addEventListener("submit", classify);
  els.apiKey.addEventListener("change", () => {
    const key = els.apiKey.value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    clearError();
    loadModel().then(loadLabelSets);
  });

  els.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
  loadModel().then(loadLabelSets);
})();
