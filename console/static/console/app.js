// Tauon console: upload with progress, live job progress bars, copy buttons. No framework.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

// The page's language: base.html renders the translations of the strings below (console/core/js_strings.py
// lists them, read from the t() calls of these scripts) as JSON; t() looks one up and fills %(name)s.
const I18N = (() => {
  try { return JSON.parse(document.getElementById("tauon-i18n").textContent); } catch (e) { return {}; }
})();
function t(text, vars) {
  const s = I18N[text] || text;
  return vars ? s.replace(/%\((\w+)\)s/g, (m, k) => (k in vars ? String(vars[k]) : m)) : s;
}
const POLL_MS = 1000;

// A status code (pending, ready, …) as the page's language words it.
function statusWord(code) { return I18N["status:" + code] || code; }

// "2026-12-06 13:27 UTC" in <time datetime> elements → the reader's own zone, named.
function localTimes(scope) {
  const format = new Intl.DateTimeFormat(document.documentElement.lang || undefined, {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false,
    timeZoneName: "short" });
  (scope || document).querySelectorAll("time[datetime]").forEach((node) => {
    const when = new Date(node.getAttribute("datetime"));
    if (Number.isNaN(when.getTime()) || node.dataset.local) return;
    node.title = node.textContent;
    node.textContent = format.format(when);
    node.dataset.local = "1";
  });
}

function csrfToken(form) {
  const field = form && form.querySelector("[name=csrfmiddlewaretoken]");
  if (field) return field.value;
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

// The API answers errors as {"error": {"code", "message", "field"}}; anything else gets a generic line.
function apiError(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return body.error.message;
    if (body && body.detail) return body.detail;
  } catch (e) { /* not JSON */ }
  if (status === 413) return t("The file is larger than the server accepts.");
  if (status === 0) return t("The server could not be reached; check your connection and try again.");
  return t("The server answered HTTP %(status)s.", { status });
}

function setBar(el, fraction, label, status) {
  const pct = Math.round(Math.max(0, Math.min(1, fraction || 0)) * 100);
  el.querySelector(".bar").style.width = pct + "%";
  el.querySelector(".label").textContent = label !== undefined ? label : pct + "%";
  el.setAttribute("aria-valuenow", String(pct));
  if (status) {
    el.dataset.jobStatus = status;
    el.className = el.className.replace(/\bstatus-\S+/g, "").trim() + " status-" + status;
  }
}

function jobLabel(job) {
  const pct = Math.round((job.progress || 0) * 100) + "%";
  if (job.status === "failed") return t("failed: %(error)s", { error: job.error || t("no reason given") });
  if (job.status === "cancelled") return t("cancelled");
  if (job.status === "queued") return t("queued, waiting for a worker");
  const label = job.progress_message ? `${pct} · ${job.progress_message}` : pct;
  return job.eta_s === null || job.eta_s === undefined || job.eta_s < 1 ? label : `${label} · ${etaText(job.eta_s)}`;
}

function etaText(seconds) {
  if (seconds < 90) return t("about %(n)s s left", { n: Math.round(seconds) });
  if (seconds < 5400) return t("about %(n)s min left", { n: Math.round(seconds / 60) });
  return t("about %(n)s h left", { n: (seconds / 3600).toFixed(1) });
}

function jobIdFrom(body) {
  for (const key of ["import_job", "job", "import_job_id", "job_id"]) {
    const value = body && body[key];
    if (typeof value === "number" || typeof value === "string") return String(value);
    if (value && value.id !== undefined) return String(value.id);
  }
  return null;
}

// Poll GET /api/jobs/{id}/ for one progress bar until its job ends.
function watchJob(el, onEnd) {
  const id = el.dataset.jobId;
  let failures = 0;
  const tick = async () => {
    let job;
    try {
      const resp = await fetch(`/api/jobs/${id}/`, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!resp.ok) throw new Error(apiError(resp.status, await resp.text()));
      job = await resp.json();
      failures = 0;
    } catch (err) {
      failures += 1;
      if (failures > 30) { el.querySelector(".label").textContent = t("progress unavailable: %(error)s", { error: err.message }); return; }
      setTimeout(tick, POLL_MS * Math.min(failures, 5));
      return;
    }
    setBar(el, job.progress, jobLabel(job), job.status);
    document.dispatchEvent(new CustomEvent("tauon:job", { detail: job })); // e.g. jobs.js's live chart
    document.querySelectorAll(`[data-job-badge="${id}"]`).forEach((badge) => {
      badge.textContent = statusWord(job.status);
      badge.className = "badge status-" + job.status;
    });
    document.querySelectorAll(`[data-job-log="${id}"]`).forEach((log) => {
      if (Array.isArray(job.log) && job.log.length) log.textContent = job.log.join("\n");
    });
    if (!TERMINAL.has(job.status)) { setTimeout(tick, POLL_MS); return; }
    document.getElementById("cancel-form")?.remove(); // the job page: nothing left to cancel
    if (onEnd) onEnd(job);
    if (el.hasAttribute("data-reload-on-finish")) setTimeout(() => window.location.reload(), 400);
  };
  tick();
}

function newJobBar(id) {
  const el = document.createElement("div");
  el.className = "progress job-progress status-queued";
  el.dataset.jobId = id;
  el.setAttribute("role", "progressbar");
  el.innerHTML = '<div class="bar"></div><span class="label"></span>';
  el.querySelector(".label").textContent = t("import queued");
  return el;
}

function showError(form, message) {
  const box = form.querySelector(".form-error");
  box.textContent = message;
  box.hidden = !message;
}

// After the API accepted a new version: follow its import job, then reload to show the version.
function followImport(form, body) {
  const id = jobIdFrom(body);
  if (!id) { window.location.reload(); return; }
  const bar = newJobBar(id);
  form.querySelector(".job-slot").replaceChildren(bar);
  watchJob(bar, (job) => {
    if (job.status === "succeeded") { setTimeout(() => window.location.reload(), 400); return; }
    showError(form, t("Import %(state)s. Reload the page to see the version's status.", { state: jobLabel(job) }));
  });
}

function setupUpload(form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    showError(form, "");
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) { showError(form, t("Choose a .zip, .tar.gz or .gguf file first.")); return; }
    const data = new FormData(form);
    data.delete("csrfmiddlewaretoken");
    if (!data.get("parent")) data.delete("parent");
    const status = form.querySelector(".upload-status");
    const bar = form.querySelector(".upload-progress");
    const button = form.querySelector("button[type=submit]");
    status.hidden = false;
    form.querySelector(".job-slot").replaceChildren();
    setBar(bar, 0, t("Uploading %(file)s… %(pct)s%", { file: file.name, pct: 0 }), "running");
    button.disabled = true;

    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.uploadUrl);
    xhr.setRequestHeader("X-CSRFToken", csrfToken(form));
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      const fraction = e.loaded / e.total;
      setBar(bar, fraction, t("Uploading %(file)s… %(pct)s%", { file: file.name, pct: Math.round(fraction * 100) }));
    };
    xhr.onload = () => {
      button.disabled = false;
      if (xhr.status >= 200 && xhr.status < 300) {
        setBar(bar, 1, t("Uploaded %(file)s", { file: file.name }), "succeeded");
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* keep {} */ }
        followImport(form, body);
      } else {
        setBar(bar, 1, t("Upload refused"), "failed");
        showError(form, apiError(xhr.status, xhr.responseText));
      }
    };
    xhr.onerror = () => {
      button.disabled = false;
      setBar(bar, 1, t("Upload failed"), "failed");
      showError(form, apiError(0, ""));
    };
    xhr.send(data);
  });
}

function setupHubImport(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, "");
    const payload = { hub_id: form.elements.hub_id.value.trim() };
    if (form.elements.revision && form.elements.revision.value.trim()) payload.revision = form.elements.revision.value.trim();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    button.textContent = t("Checking the hub…");
    try {
      const resp = await fetch(form.dataset.uploadUrl, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrfToken(form) },
        body: JSON.stringify(payload),
      });
      const text = await resp.text();
      if (!resp.ok) { showError(form, apiError(resp.status, text)); return; }
      form.querySelector(".upload-status").hidden = false;
      followImport(form, JSON.parse(text || "{}"));
    } catch (err) {
      showError(form, apiError(0, ""));
    } finally {
      button.disabled = false;
      button.textContent = t("Import");
    }
  });
}

function setupCopy(button) {
  button.addEventListener("click", async () => {
    const input = document.querySelector(button.dataset.copy);
    input.select();
    try { await navigator.clipboard.writeText(input.value); } catch (e) { document.execCommand("copy"); }
    button.textContent = t("Copied");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const toggle = document.querySelector(".navtoggle");
  if (toggle) {
    toggle.addEventListener("click", () => {
      const open = document.body.classList.toggle("nav-open");
      toggle.setAttribute("aria-expanded", String(open));
    });
  }
  document.querySelectorAll(".progress[data-job-id]").forEach((el) => {
    if (!TERMINAL.has(el.dataset.jobStatus)) watchJob(el);
  });
  document.querySelectorAll("#upload-form").forEach(setupUpload);
  document.querySelectorAll("#hub-form").forEach(setupHubImport);
  document.querySelectorAll("[data-copy]").forEach(setupCopy);
});

// ---- Deployments: live status and replicas, charts of recent figures, and the create/change/stop/start/delete
// ---- actions. Every change goes through the REST API (session + CSRF header), like the uploads above.

const DEPLOY_POLL_MS = 2000;
const FIGURES_WINDOW_S = 600; // the charts show the last ten minutes
const REPLICA_COLORS = ["#3b4bd8", "#d8553b", "#1f8a4c", "#b7791f", "#8a3bd8", "#2b6cb0", "#c53074", "#4a5568"];

async function apiCall(url, method, body, scope) {
  const headers = { Accept: "application/json", "X-CSRFToken": csrfToken(scope) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(url, {
    method, credentials: "same-origin", headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
  return { ok: resp.ok, status: resp.status, text, data, now: Date.parse(resp.headers.get("Date")) || Date.now() };
}

function setText(scope, selector, text) {
  scope.querySelectorAll(selector).forEach((el) => { el.textContent = text; });
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function sortedJson(value) {
  const sortKeys = (k, v) => (v && typeof v === "object" && !Array.isArray(v)
    ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : v);
  return JSON.stringify(value, sortKeys, 2);
}

// Status badge, reason, serving version and ready/wanted replicas, wherever `scope` shows them.
function renderDeploymentSummary(scope, d) {
  const ready = (d.replica_set || []).filter((r) => r.state === "ready").length;
  scope.querySelectorAll("[data-deployment-status]").forEach((badge) => {
    badge.textContent = statusWord(d.status);
    badge.className = "badge status-" + d.status;
  });
  setText(scope, "[data-status-reason]", d.status_reason);
  setText(scope, "[data-serving-version]", d.serving_version ? "v" + d.serving_version : "—");
  setText(scope, "[data-replica-count]", `${ready}/${d.replicas}`);
}

function replicaRow(r, serverNow) {
  const tr = el("tr");
  tr.dataset.replica = r.key;
  const stats = r.stats || {};
  const shown = (v) => (v === undefined || v === null ? "—" : v);
  const age = Math.max(0, Math.round((serverNow - Date.parse(r.heartbeat_at)) / 1000));
  const state = el("td");
  const badge = el("span", statusWord(r.state), "badge status-" + r.state);
  badge.dataset.replicaState = "";
  state.append(badge);
  if (r.status_reason) state.append(el("div", r.status_reason, "muted small"));
  const kv = stats.kv_cache_usage;
  const idle = stats.running === 0 && !stats.waiting; // a replica's last tok/s lingers while it is idle
  tr.append(el("td", "#" + r.slot), el("td", r.worker), el("td", r.pid, "num"),
    el("td", r.version ? "v" + r.version : "—"), state, el("td", t("%(n)s s ago", { n: age }), "num"),
    el("td", shown(stats.running), "num"), el("td", shown(stats.waiting), "num"),
    el("td", kv === undefined || kv === null ? "—" : Math.round(kv * 100) + "%", "num"),
    el("td", idle ? statusWord("idle") : shown(stats.tokens_per_s), "num"));
  return tr;
}

function renderDeployment(root, d, serverNow) {
  renderDeploymentSummary(root, d);
  const follows = root.querySelector("[data-follows]");
  if (follows) {
    if (d.version) follows.replaceChildren(t("pinned v%(n)s", { n: d.version }));
    else follows.replaceChildren(t("alias") + " ", el("span", d.alias, "tag alias"));
  }
  const body = root.querySelector("#replica-table tbody");
  if (body) {
    const rows = (d.replica_set || []).map((r) => replicaRow(r, serverNow));
    if (!rows.length) {
      const empty = el("tr", undefined, "empty");
      const td = el("td", t("No replicas yet."), "muted");
      td.colSpan = 10;
      empty.append(td);
      rows.push(empty);
    }
    body.replaceChildren(...rows);
  }
  const config = root.querySelector("#config-json");
  if (config) config.textContent = sortedJson(d.config);
  const stop = root.querySelector("#stop-button");
  const start = root.querySelector("#start-button");
  if (stop && start) { stop.hidden = d.stopped; start.hidden = !d.stopped; }
}

// The detail page: poll GET /api/deployments/{name}/ and redraw; returns a handle the actions use.
function setupDeploymentPage(root) {
  const url = root.dataset.apiUrl;
  const pollMs = Number(root.dataset.pollMs) || DEPLOY_POLL_MS;
  let gone = false;
  const tick = async () => {
    if (gone) return;
    if (!document.hidden) {
      try {
        const res = await apiCall(url, "GET", undefined, root);
        if (res.status === 404) {
          gone = true;
          setText(root, "[data-status-reason]", t("This deployment no longer exists."));
          return;
        }
        if (res.ok) renderDeployment(root, res.data, res.now);
      } catch (err) { /* the next tick tries again */ }
    }
    setTimeout(tick, pollMs);
  };
  setTimeout(tick, pollMs); // the first view is the server's
  return { update: (d, serverNow) => renderDeployment(root, d, serverNow || Date.now()) };
}

// The list page: keep each row's status, reason and replica count fresh.
function setupDeploymentList(table) {
  const tick = async () => {
    if (!document.hidden) {
      try {
        const res = await apiCall(table.dataset.liveList, "GET", undefined, table);
        const items = res.ok && res.data ? (Array.isArray(res.data) ? res.data : res.data.results || []) : [];
        items.forEach((d) => {
          const row = table.querySelector(`tr[data-deployment="${CSS.escape(d.name)}"]`);
          if (row) renderDeploymentSummary(row, d);
        });
      } catch (err) { /* the next tick tries again */ }
    }
    setTimeout(tick, DEPLOY_POLL_MS * 2);
  };
  setTimeout(tick, DEPLOY_POLL_MS * 2);
}

// Charts of GET /api/deployments/{name}/figures?since=… : one line per replica, the last ten minutes.
function setupDeploymentCharts(box) {
  const empty = document.getElementById("figures-empty");
  if (typeof Plotly === "undefined") { // loads async (it is large): start once it is there
    const script = document.getElementById("plotly-js");
    if (script && !script.dataset.waited) {
      script.dataset.waited = "1";
      script.addEventListener("load", () => setupDeploymentCharts(box));
      script.addEventListener("error", () => setupDeploymentCharts(box));
      return;
    }
    if (empty) empty.textContent = t("The charting library could not be loaded; reload the page to try again.");
    return;
  }
  const series = new Map(); // replica key → {slot, t, tokens, running, waiting, kv}
  let since = 0;
  const color = (i) => REPLICA_COLORS[i % REPLICA_COLORS.length];
  const name = (key, s) => `#${s.slot} · ${key.slice(0, 6)}`;
  const line = (key, s, i, y, extra) => ({
    x: s.t, y, name: name(key, s), legendgroup: key, type: "scatter", mode: "lines",
    line: { color: color(i), width: 2, ...(extra || {}) }, connectgaps: false,
  });
  const charts = [
    { id: "chart-tokens", traces: (key, s, i) => [line(key, s, i, s.tokens)],
      yaxis: { title: { text: t("tokens per second") }, rangemode: "tozero" } },
    { id: "chart-queue", traces: (key, s, i) => [
      { ...line(key, s, i, s.running), name: name(key, s) + " " + t("running") },
      { ...line(key, s, i, s.waiting, { dash: "dot" }), name: name(key, s) + " " + t("waiting") },
    ], yaxis: { title: { text: t("requests") }, rangemode: "tozero" } },
    { id: "chart-kv", traces: (key, s, i) => [line(key, s, i, s.kv)],
      yaxis: { title: { text: t("KV cache in use (%)") }, range: [0, 100], ticksuffix: "%" } },
    { id: "chart-ttft", traces: (key, s, i) => [line(key, s, i, s.ttft), { ...line(key, s, i, s.limit, { dash: "dot" }),
      name: name(key, s) + " " + t("admitted"), yaxis: "y2" }], target: true,
      yaxis: { title: { text: t("p99 TTFT (ms)") }, rangemode: "tozero" },
      yaxis2: { overlaying: "y", side: "right", rangemode: "tozero", showgrid: false } }, // adaptive admission
  ];
  let revision = 0;
  const draw = () => {
    revision += 1; // the arrays grow in place; a new datarevision tells Plotly.react to look again
    charts.forEach((chart) => {
      const node = document.getElementById(chart.id);
      if (!node) return;
      const traces = [...series.entries()].flatMap(([key, s], i) => chart.traces(key, s, i));
      const layout = {
        title: { text: node.dataset.title, font: { size: 13 } }, height: 280, margin: { l: 60, r: 12, t: 36, b: 48 },
        xaxis: { type: "date", title: { text: t("time") } }, yaxis: { rangemode: "tozero", ...(chart.yaxis || {}) },
        showlegend: true, legend: { orientation: "h", y: -0.2 }, font: { size: 11 }, datarevision: revision,
      };
      if (chart.yaxis2) layout.yaxis2 = chart.yaxis2;
      if (chart.target) {
        layout.shapes = [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: Number(node.dataset.target),
          y1: Number(node.dataset.target), line: { color: "#d8553b", dash: "dash" } }];
      }
      Plotly.react(node, traces, layout, { displayModeBar: false, responsive: true });
    });
  };
  const value = (v) => (v === undefined ? null : v);
  const tick = async () => {
    if (!document.hidden) {
      try {
        const res = await apiCall(`${box.dataset.figuresUrl}?since=${since}`, "GET", undefined, box);
        if (res.ok && res.data) {
          res.data.samples.forEach((sample) => {
            if (!series.has(sample.replica)) {
              series.set(sample.replica, { slot: sample.slot, t: [], tokens: [], running: [], waiting: [], kv: [],
                ttft: [], limit: [] });
            }
            const s = series.get(sample.replica);
            s.t.push(new Date(sample.t * 1000));
            const idle = sample.running === 0 && !sample.waiting; // idle: 0, not the last busy figure
            s.tokens.push(idle ? 0 : value(sample.tokens_per_s));
            s.running.push(value(sample.running));
            s.waiting.push(value(sample.waiting));
            s.kv.push(sample.kv_cache_usage === undefined ? null : sample.kv_cache_usage * 100);
            s.ttft.push(value(sample.ttft_p99_ms));
            s.limit.push(value(sample.admit_limit));
            since = Math.max(since, sample.t);
          });
          const cutoff = new Date((res.data.now - FIGURES_WINDOW_S) * 1000);
          for (const [key, s] of series) {
            const keep = s.t.findIndex((t) => t >= cutoff);
            if (keep === -1) { series.delete(key); continue; }
            for (const field of ["t", "tokens", "running", "waiting", "kv", "ttft", "limit"]) s[field].splice(0, keep);
          }
          box.dataset.samples = String([...series.values()].reduce((n, s) => n + s.t.length, 0));
          if (empty) empty.hidden = series.size > 0;
          const wasHidden = box.hidden;
          box.hidden = series.size === 0; // Plotly sizes a chart from its box, so draw only once it shows
          if (series.size && (wasHidden || res.data.samples.length)) draw();
        }
      } catch (err) { console.warn("figures:", err); /* the next tick tries again */ }
    }
    setTimeout(tick, DEPLOY_POLL_MS);
  };
  tick();
}

// A message under one field (empty: none); the field is marked invalid while it has one.
function fieldError(input, message) {
  const label = input.closest("label") || input.parentElement;
  let slot = label.querySelector(".field-error");
  if (!slot) {
    slot = el("span", "", "error field-error");
    slot.setAttribute("role", "alert");
    label.append(slot);
  }
  slot.textContent = message || "";
  slot.hidden = !message;
  input.classList.toggle("invalid", Boolean(message));
  input.setAttribute("aria-invalid", message ? "true" : "false");
}

// Every field's problem at once, in the form's words (the form is novalidate: the browser's own bubbles show
// one field at a time, in the browser's language). Returns whether all fields are fine.
function checkDeploymentForm(form) {
  let ok = true;
  form.querySelectorAll("input[data-field], select[data-field]").forEach((input) => {
    const v = input.validity;
    let message = "";
    if (v.valueMissing) message = t("Required.");
    else if (v.badInput || (input.type === "number" && input.value !== "" && !Number.isInteger(Number(input.value)))) {
      message = t("Give a whole number.");
    } else if (v.rangeUnderflow) message = t("At least %(n)s.", { n: input.min });
    else if (v.rangeOverflow) message = t("At most %(n)s.", { n: input.max });
    else if (v.patternMismatch) message = t("Use letters, digits, - and _ only.");
    else if (v.tooLong) message = t("At most %(n)s characters.", { n: input.maxLength });
    fieldError(input, message);
    ok = ok && !message;
  });
  return ok;
}

// The API's error names its field ("replicas", "config.engine.max_num_seqs"): the message goes under it.
function showDeploymentError(form, res) {
  const message = apiError(res.status, res.text);
  const field = res.data && res.data.error ? res.data.error.field : null;
  const input = field && [...form.querySelectorAll("[data-field]")].find((x) => x.dataset.field.split(" ").includes(field));
  if (input) { fieldError(input, message); showError(form, t("Check the marked fields.")); return; }
  showError(form, message);
}

function deploymentPayload(form) {
  const f = form.elements;
  const number = (name) => {
    const raw = f[name] ? f[name].value.trim() : "";
    return raw === "" ? undefined : Number(raw);
  };
  const payload = {};
  if (f.name) payload.name = f.name.value.trim();
  if (f.model) payload.model = f.model.value;
  const target = f.target ? f.target.value : "";
  const cut = target.indexOf(":");
  if (cut > 0 && target.slice(0, cut) === "version") payload.version = Number(target.slice(cut + 1));
  if (cut > 0 && target.slice(0, cut) === "alias") payload.alias = target.slice(cut + 1);
  payload.replicas = number("replicas");
  payload.config = {
    engine: { quantization: f.quantization.value, max_num_seqs: number("max_num_seqs"), max_queue: number("max_queue"),
              runtime: f.runtime.value, threads: number("threads"), max_model_len: number("max_model_len") },
    max_tokens: number("max_tokens"),
    timeout_s: number("timeout_s"),
    ttft_target_ms: number("ttft_target_ms"),
  };
  return payload;
}

// The new-deployment form: the "Serve" choices follow the chosen model (its aliases and ready versions).
function setupServeTargets(form) {
  const select = form.querySelector("[data-targets-for]");
  const blob = document.getElementById("deployment-targets");
  if (!select || !blob) return;
  const targets = JSON.parse(blob.textContent);
  const model = form.elements[select.dataset.targetsFor];
  const context = form.elements.max_model_len;
  const fill = (wanted) => {
    const target = targets[model.value] || {};
    const options = target.options || [];
    select.replaceChildren(...options.map((o) => new Option(o.label, o.value)));
    if (!options.length) select.append(new Option(t("nothing ready to serve yet"), ""));
    if (wanted && options.some((o) => o.value === wanted)) select.value = wanted;
    else if (options.some((o) => o.value === "alias:production")) select.value = "alias:production";
    if (context) { // 0 is the model's own context; more than it is refused
      if (target.context) context.max = String(target.context); else context.removeAttribute("max");
      const help = context.closest("label").querySelector("[data-context-help]");
      if (help) help.textContent = target.context ? t("0 = the model's own (%(n)s tokens)", { n: target.context }) : t("0 = the model's own");
    }
  };
  // ?model=NAME&version=N or &alias=NAME (the registry's "Deploy this version" links) choose the target
  const query = new URLSearchParams(window.location.search);
  const asked = query.get("model");
  const wanted = query.get("version") ? "version:" + query.get("version") : query.get("alias") ? "alias:" + query.get("alias") : "";
  if (asked && targets[asked]) model.value = asked;
  const firstReady = [...model.options].find((o) => ((targets[o.value] || {}).options || []).length);
  if (firstReady && !((targets[model.value] || {}).options || []).length) model.value = firstReady.value;
  model.addEventListener("change", () => fill(""));
  fill(wanted);
  if (asked && form.elements.name && !form.elements.name.value) {
    form.elements.name.value = asked.toLowerCase().replace(/[^a-z0-9_-]+/g, "-").slice(0, 64);
    form.closest("section").scrollIntoView();
  }
}

function setupDeploymentForm(form, live) {
  const saved = form.querySelector(".form-saved");
  form.querySelector("button[type=submit]").disabled = false; // rendered disabled until this handler is on
  form.addEventListener("input", (event) => { // a corrected field loses its message at once
    if (event.target.classList.contains("invalid")) checkDeploymentForm(form);
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, "");
    if (saved) saved.hidden = true;
    if (!checkDeploymentForm(form)) { showError(form, t("Check the marked fields.")); return; }
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const res = await apiCall(form.dataset.apiUrl, form.dataset.method, deploymentPayload(form), form);
      if (!res.ok) { showDeploymentError(form, res); return; }
      form.querySelectorAll("[data-field]").forEach((input) => fieldError(input, ""));
      if (form.dataset.method === "POST") {
        window.location.assign(`/deployments/${encodeURIComponent(res.data.name)}/?created=1`);
        return;
      }
      if (live) live.update(res.data, res.now);
      if (saved) { saved.textContent = t("Saved."); saved.hidden = false; }
    } catch (err) {
      showError(form, apiError(0, ""));
    } finally {
      button.disabled = false;
    }
  });
}

function setupDeploymentActions(box, url, live) {
  box.querySelectorAll("button[data-action]").forEach((button) => {
    button.disabled = false;
    button.addEventListener("click", async () => {
      const action = button.dataset.action;
      const name = url.split("/").filter(Boolean).pop();
      if (action === "delete" && !window.confirm(t("Delete deployment '%(name)s'? Its replicas stop and clients calling it get errors.", { name }))) return;
      if (action === "stop" && !window.confirm(t("Stop deployment '%(name)s'? Its replicas unload and clients calling it get errors until it is started again.", { name }))) return;
      showError(box, "");
      button.disabled = true;
      try {
        const res = action === "delete" ? await apiCall(url, "DELETE", undefined, box)
          : await apiCall(url + action, "POST", undefined, box);
        if (!res.ok) { showError(box, apiError(res.status, res.text)); return; }
        if (action === "delete") { window.location.assign("/deployments/?deleted=" + encodeURIComponent(name)); return; }
        live.update(res.data, res.now);
      } catch (err) {
        showError(box, apiError(0, ""));
      } finally {
        button.disabled = false;
      }
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("table[data-live-list]").forEach(setupDeploymentList);
  const root = document.getElementById("deployment");
  const live = root ? setupDeploymentPage(root) : null;
  document.querySelectorAll("form.deployment-form").forEach((form) => {
    setupServeTargets(form);
    setupDeploymentForm(form, live);
  });
  if (root) {
    const actions = document.getElementById("deployment-actions");
    if (actions) setupDeploymentActions(actions, root.dataset.apiUrl, live);
    const charts = document.getElementById("charts");
    if (charts) setupDeploymentCharts(charts);
  }
});
