// classicnets serve: the page. Plain JavaScript, no libraries; every number and picture comes from the
// JSON API (the same one /docs documents). Text from the server is set with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const STROKE = 22; // px on the 280 px canvas: about two pixels of a 28x28 digit, like MNIST's pen
const PREDICT_DEBOUNCE_MS = 120;
const VIEWS_DEBOUNCE_MS = 300;

const state = {
  models: [],
  byId: {},
  model: null, // id of the chosen model
  twin: null, // id of the twin in the compare tab
  strokes: [], // each a list of [x, y] canvas points; the canvas is redrawn from them (undo)
  current: null, // the stroke being drawn
  base: null, // an uploaded image, drawn under the strokes
  baseFile: null, // ... and its file, sent as it is while nothing is drawn over it
  camTarget: null, // class index Grad-CAM explains (null: the predicted class)
  tab: "features",
  stageLabels: {}, // module name -> label (C1 .. C5 for LeNet-5), from the last feature response
};

// ------------------------------------------------------------------------------------------------ helpers
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
const shape = (dims) => dims.join("\u00d7");
const pct = (p) => (p >= 0.995 ? (p * 100).toFixed(0) : (p * 100).toFixed(1)) + "%";
function human(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " G";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " K";
  return String(n);
}

let statusTimer = null;
function status(message, isError = false) {
  const box = $("status");
  box.textContent = message;
  box.className = "status show" + (isError ? " error" : "");
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => (box.className = "status"), isError ? 6000 : 2500);
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body;
  try {
    body = await response.json();
  } catch (_) {
    body = { error: `HTTP ${response.status}` };
  }
  if (!response.ok) {
    const error = new Error(body.error || `HTTP ${response.status}`);
    error.status = response.status;
    error.retryAfter = Number(response.headers.get("Retry-After") || 1);
    throw error;
  }
  return body;
}

function hasInput() {
  return state.strokes.length > 0 || state.base !== null || state.baseFile !== null;
}

// The image request for a model: the uploaded file as it is (multipart) while nothing is drawn over it,
// else the canvas as a PNG data URL (JSON). The server runs the model's own preprocessing on either.
function imageRequest(modelId, extra = {}) {
  if (state.baseFile && state.strokes.length === 0) {
    const form = new FormData();
    form.append("model", modelId);
    form.append("image", state.baseFile);
    for (const [key, value] of Object.entries(extra)) form.append(key, String(value));
    return { method: "POST", body: form };
  }
  const body = { model: modelId, image: canvas.toDataURL("image/png"), ...extra };
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

// Run `job` at most once at a time; calls while it runs fold into one more run afterwards. A 503 (the
// server's workers are full) is retried after its Retry-After.
function latestOnly(job) {
  let running = false;
  let again = false;
  const run = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      await job();
    } catch (error) {
      if (error.status === 503) {
        status("The server is busy; retrying\u2026");
        setTimeout(run, error.retryAfter * 1000);
      } else {
        status(error.message, true); // the server's sentence: what is wrong and what to send instead
        if (error.status >= 400 && error.status < 500) clearResults(); // no answers left from the last input
      }
    } finally {
      running = false;
      if (again) {
        again = false;
        run();
      }
    }
  };
  return run;
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

// ------------------------------------------------------------------------------------------------ drawing
function redraw() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (state.base) {
    const scale = Math.min(canvas.width / state.base.width, canvas.height / state.base.height);
    const w = state.base.width * scale;
    const h = state.base.height * scale;
    ctx.imageSmoothingEnabled = scale < 1; // small images (28x28) stay crisp when blown up
    ctx.drawImage(state.base, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
  }
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineWidth = STROKE;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of state.strokes) {
    ctx.beginPath();
    ctx.moveTo(stroke[0][0], stroke[0][1]);
    if (stroke.length === 1) ctx.lineTo(stroke[0][0] + 0.01, stroke[0][1]);
    for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * canvas.width) / box.width,
    ((event.clientY - box.top) * canvas.height) / box.height,
  ];
}

canvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  state.current = [point(event)];
  state.strokes.push(state.current);
  redraw();
  inputChanged(false);
});
canvas.addEventListener("pointermove", (event) => {
  if (!state.current) return;
  state.current.push(point(event));
  redraw();
  predictSoon();
});
function endStroke() {
  if (!state.current) return;
  state.current = null;
  inputChanged(true);
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

$("undo").addEventListener("click", () => {
  state.strokes.pop();
  redraw();
  inputChanged(true);
});
$("clear").addEventListener("click", () => {
  state.strokes = [];
  state.base = null;
  state.baseFile = null;
  redraw();
  inputChanged(true);
});
document.addEventListener("keydown", (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key === "z") $("undo").click();
});

$("upload").addEventListener("change", async () => {
  const file = $("upload").files[0];
  $("upload").value = "";
  if (!file) return;
  state.strokes = [];
  state.baseFile = file;
  try {
    state.base = await createImageBitmap(file);
  } catch (_) {
    state.base = null; // not an image the browser can show; the server says why it refuses it
  }
  redraw();
  inputChanged(true, file.name);
});

// ------------------------------------------------------------------------------------------------ updates
function inputChanged(strokeDone, fileName) {
  $("status").className = "status"; // a new input: the last one's error no longer applies
  const kind = $("input-kind");
  if (fileName) kind.textContent = `uploaded: ${fileName}`;
  else if (state.strokes.length) kind.textContent = state.base ? "upload + drawing" : "drawing";
  else kind.textContent = state.base ? "uploaded image" : "draw or upload";
  if (!hasInput()) {
    clearResults();
    return;
  }
  predictNow();
  if (strokeDone) viewsSoon();
}

function clearResults() {
  $("top5").replaceChildren();
  $("predict-ms").textContent = "";
  $("features").replaceChildren(el("p", "empty", "Draw something or upload an image."));
  $("features-ms").textContent = "";
  $("seen").removeAttribute("src");
  $("cam").removeAttribute("src");
  $("cam-caption").textContent = "Grad-CAM";
  $("cam-layer").textContent = "";
  $("compare").replaceChildren(el("p", "empty", "Draw something or upload an image."));
}

const predictNow = latestOnly(async () => {
  if (!hasInput() || !state.model) return;
  const id = state.model;
  const result = await api("/api/predict", imageRequest(id));
  if (id !== state.model || !hasInput()) return;
  renderBars($("top5"), result.top, true);
  $("predict-ms").textContent = `${result.ms.toFixed(1)} ms on the server`;
});
const predictSoon = debounce(predictNow, PREDICT_DEBOUNCE_MS);

const featuresNow = latestOnly(async () => {
  if (!hasInput() || !state.model) return;
  const id = state.model;
  const result = await api("/api/features", imageRequest(id));
  if (id !== state.model || !hasInput()) return;
  state.stageLabels = Object.fromEntries(result.stages.map((s) => [s.name, s.label]));
  renderStages($("features"), result, true);
  $("seen").src = result.input.image;
  $("seen-caption").textContent = `model input ${shape(result.input.shape)}`;
  $("features-ms").textContent = `${result.ms.toFixed(1)} ms on the server`;
});

const gradcamNow = latestOnly(async () => {
  if (!hasInput() || !state.model) return;
  const id = state.model;
  const extra = state.camTarget === null ? {} : { target: state.camTarget };
  const result = await api("/api/gradcam", imageRequest(id, extra));
  if (id !== state.model || !hasInput()) return;
  $("cam").src = result.overlay;
  $("cam-caption").textContent = `evidence for \u201c${result.target.class}\u201d (${pct(result.target.prob)})`;
  $("cam-layer").textContent = `at ${result.layer_label} \u00b7 ${shape(result.layer_shape)}`;
  for (const li of $("top5").children) li.classList.toggle("target", Number(li.dataset.index) === result.target.index);
});

const compareNow = latestOnly(async () => {
  const box = $("compare");
  if (!state.twin || !state.model) {
    box.replaceChildren(el("p", "empty", twinMessage()));
    return;
  }
  if (!hasInput()) {
    box.replaceChildren(el("p", "empty", "Draw something or upload an image."));
    return;
  }
  const ids = [state.model, state.twin];
  const results = await Promise.all(
    ids.map((id) =>
      Promise.all([api("/api/predict", imageRequest(id)), api("/api/features", imageRequest(id, { max_channels: 6 }))]),
    ),
  );
  if (ids[0] !== state.model || ids[1] !== state.twin) return;
  box.replaceChildren(
    ...ids.map((id, i) => {
      const entry = state.byId[id];
      const side = el("div", "side");
      const title = el("h3", "", entry.label);
      title.append(" ", el("span", entry.residual ? "badge" : "badge plain", entry.residual ? "residual" : "plain"));
      const bars = el("ol", "bars small");
      renderBars(bars, results[i][0].top.slice(0, 3), false);
      const stages = el("div", "stages");
      renderStages(stages, results[i][1], false);
      side.append(title, el("div", "muted", describe(entry)), bars, stages);
      return side;
    }),
  );
});

function viewsNow() {
  featuresNow();
  gradcamNow();
  if (state.tab === "compare") compareNow();
}
const viewsSoon = debounce(viewsNow, VIEWS_DEBOUNCE_MS);

// ------------------------------------------------------------------------------------------------ rendering
function renderBars(list, top, clickable) {
  list.replaceChildren(
    ...top.map((item) => {
      const li = el("li");
      li.dataset.index = item.index;
      li.title = `${item.class}: ${(item.prob * 100).toFixed(2)}%`;
      const track = el("span", "track");
      const fill = el("span", "fill");
      fill.style.width = `${Math.max(item.prob * 100, 0.5)}%`;
      fill.style.display = "block";
      track.append(fill);
      li.append(el("span", "name", item.class), track, el("span", "value", pct(item.prob)));
      if (clickable) {
        li.classList.toggle("target", item.index === state.camTarget);
        li.addEventListener("click", () => {
          state.camTarget = item.index;
          gradcamNow();
        });
      }
      return li;
    }),
  );
}

function renderStages(box, result, withInput) {
  const nodes = [];
  if (withInput) {
    const row = el("div", "input-row");
    const img = el("img");
    img.src = result.input.image;
    img.alt = "model input";
    row.append(img, el("span", "", `input ${shape(result.input.shape)}: ${result.input.note}`));
    nodes.push(row);
  }
  for (const stage of result.stages) {
    const block = el("div", "stage");
    const head = el("h3", "", stage.label);
    head.append(" ", el("span", "shape", shape(stage.shape)));
    const [c] = stage.shape;
    const note =
      stage.kind === "units"
        ? `${c} units of 1\u00d71, as a grid`
        : stage.shown < c
          ? `first ${stage.shown} of ${c} channels`
          : `all ${c} channels`;
    head.append(" ", el("span", "note", note));
    const maps = el("div", "maps");
    stage.images.forEach((src, i) => {
      const img = el("img", stage.kind === "units" ? "units" : "");
      img.src = src;
      img.alt = `${stage.label} channel ${i}`;
      img.title = stage.kind === "units" ? `${stage.label}: ${c} units` : `${stage.label}, channel ${i}`;
      maps.append(img);
    });
    block.append(head, maps);
    nodes.push(block);
  }
  box.replaceChildren(...nodes);
}

function describe(entry) {
  const acc = entry.accuracy === null ? "" : ` \u00b7 ${entry.accuracy_kind} acc ${pct(entry.accuracy)}`;
  return `${entry.model} on ${entry.data} \u00b7 input ${shape(entry.input_size)}${acc}`;
}

function twinMessage() {
  const entry = state.byId[state.model];
  if (!entry) return "No model chosen.";
  if (!entry.twin_model) return `${entry.model} has no plain/residual twin; pick a ResNet (resnet20) or a plain net (plain20).`;
  return `No ${entry.twin_model} trained on ${entry.data} is listed: train one (classicnets train ${entry.twin_model}) to compare.`;
}

function renderLayers(table) {
  const head = ["#", "layer", "type", "output", "params", "formula", "MACs", "RF"];
  const thead = el("thead");
  const tr = el("tr");
  head.forEach((h) => tr.append(el("th", "", h)));
  thead.append(tr);
  const tbody = el("tbody");
  table.rows.forEach((row, i) => {
    const r = el("tr");
    const out = row.output_shape ? shape(row.output_shape) : "\u2014";
    const rf = row.receptive_field === null ? "\u2014" : String(row.receptive_field);
    const params = row.params + row.non_trainable;
    const cells = [
      [String(i + 1), "num"], [row.name, ""], [row.type, ""], [out, "num"],
      [params ? params.toLocaleString() : "0", "num"], [params ? row.formula : "", "formula"],
      [row.macs ? human(row.macs) : "0", "num"], [rf, "num"],
    ];
    cells.forEach(([text, cls]) => r.append(el("td", cls, text)));
    tbody.append(r);
  });
  $("layers").replaceChildren(thead, tbody);
  const paper = table.paper_params ? ` \u00b7 paper: ${table.paper_params.toLocaleString()}` : "";
  $("layers-total").textContent =
    `${table.total_params.toLocaleString()} parameters${paper} \u00b7 ${human(table.total_macs)}MACs \u00b7 input ${shape(table.input_size)}`;
}

async function loadLayers() {
  const id = state.model;
  $("layers").replaceChildren();
  $("layers-total").textContent = "";
  const table = await api(`/api/models/${encodeURIComponent(id)}/layers`);
  if (id === state.model) renderLayers(table);
}

async function loadClaims() {
  const result = await api("/api/claims");
  const box = $("claims");
  if (!result.claims.length) {
    const p = el("p", "howto");
    p.append(el("span", "", (result.message || "No case studies yet.").split(result.command)[0]));
    p.append(el("code", "", result.command));
    const tail = (result.message || "").split(result.command)[1];
    if (tail) p.append(el("span", "", tail));
    box.replaceChildren(p);
    return;
  }
  box.replaceChildren(
    ...result.claims.map((claim) => {
      const card = el("div", "claim");
      card.append(el("h3", "", claim.name));
      for (const v of claim.verdicts) {
        const verdict = v.verdict;
        const line = el("p");
        if (verdict && typeof verdict === "object" && !Array.isArray(verdict)) {
          const word = verdict.verdict ?? verdict.result ?? verdict.status;
          const claimText = verdict.claim ?? verdict.title ?? "";
          if (word !== undefined) line.append(el("span", "verdict", `${word}`), el("span", "", claimText ? ` \u2014 ${claimText}` : ""));
          else line.append(el("pre", "", JSON.stringify(verdict, null, 2)));
        } else {
          line.append(el("span", "muted", `${v.file}: ${v.problem || JSON.stringify(verdict)}`));
        }
        card.append(line);
      }
      if (claim.report) card.append(el("pre", "", claim.report));
      return card;
    }),
  );
}

// ------------------------------------------------------------------------------------------------ models
function hint(entry) {
  const data = entry.data.toLowerCase();
  if (data.includes("fashion")) return "Draw a garment white on black: Fashion-MNIST's images are light objects on a black background. Or upload an image.";
  if (data.includes("mnist")) return "Draw a digit white on black, as large as the canvas. Or upload an image.";
  if (entry.input_size[0] === 3) return "Upload a photo (the model was trained on colour images); drawings work too.";
  return "Draw white on black, or upload an image.";
}

function chooseModel(id) {
  state.model = id;
  state.camTarget = null;
  const entry = state.byId[id];
  $("model").value = id;
  $("model-info").textContent = describe(entry);
  $("input-hint").textContent = hint(entry);
  const twins = entry.twins.filter((t) => state.byId[t]);
  const twinSelect = $("twin");
  twinSelect.replaceChildren(...twins.map((t) => new Option(optionText(state.byId[t]), t)));
  state.twin = twins.length ? twins[0] : null;
  twinSelect.disabled = !twins.length;
  loadLayers().catch((error) => status(error.message, true));
  if (hasInput()) {
    predictNow();
    viewsNow();
  }
  if (state.tab === "compare") compareNow();
}

function optionText(m) {
  if (m.kind === "weight") return m.label; // dataset:model
  return m.label === m.model ? `${m.label} · ${m.data}` : `${m.label} · ${m.model} on ${m.data}`;
}

async function loadModels() {
  const result = await api("/api/models");
  state.models = result.models;
  state.byId = Object.fromEntries(result.models.map((m) => [m.id, m]));
  const select = $("model");
  const groups = [
    ["Shipped weights", result.models.filter((m) => m.kind === "weight")],
    ["Your runs", result.models.filter((m) => m.kind === "run")],
  ];
  select.replaceChildren();
  for (const [label, models] of groups) {
    if (!models.length) continue;
    const group = document.createElement("optgroup");
    group.label = label;
    for (const m of models) group.append(new Option(optionText(m), m.id));
    select.append(group);
  }
  if (result.skipped.length) status(`${result.skipped.length} checkpoint(s) could not be read: ${result.skipped[0].file}: ${result.skipped[0].reason}`, true);
  if (!result.models.length) {
    $("model-info").textContent = "No models: train one (classicnets train lenet5_modern) into the runs folder, then reload.";
    return;
  }
  chooseModel(result.models[0].id);
}

$("model").addEventListener("change", () => chooseModel($("model").value));
$("twin").addEventListener("change", () => {
  state.twin = $("twin").value;
  compareNow();
});

for (const button of document.querySelectorAll(".tabs button")) {
  button.addEventListener("click", () => {
    state.tab = button.dataset.tab;
    for (const b of document.querySelectorAll(".tabs button")) b.classList.toggle("active", b === button);
    for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.id === `tab-${state.tab}`);
    if (state.tab === "compare") compareNow();
    if (state.tab === "claims") loadClaims().catch((error) => status(error.message, true));
  });
}

redraw();
loadModels().catch((error) => status(error.message, true));
loadClaims().catch(() => {});
