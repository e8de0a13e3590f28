// Tauon console, evaluation page: start an evaluation through the REST API, follow its progress bar,
// then show the comparison (table and plotly charts) of the stored results. Uses app.js's helpers.
"use strict";

function setupEvaluateForm(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, "");
    const versions = [...form.querySelectorAll("input[name=versions]:checked")].map((box) => Number(box.value));
    if (!versions.length) { showError(form, t("Tick at least one version.")); return; }
    let config = {};
    const extra = form.elements.config.value.trim();
    if (extra) {
      try { config = JSON.parse(extra); } catch (err) { showError(form, t("The config is not valid JSON: %(error)s", { error: err.message })); return; }
      if (!config || typeof config !== "object" || Array.isArray(config)) { showError(form, t("The config must be a JSON object.")); return; }
    }
    const quantization = form.elements.quantization.value;
    if (quantization !== "none") config = { ...config, engine: { ...(config.engine || {}), quantization } };
    const dataset = form.elements.dataset.value;
    const params = { model: form.getAttribute("data-model"), versions, dataset, config }; // (form.dataset is the select)
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const res = await apiCall("/api/jobs/", "POST", { kind: "evaluate", params }, form);
      if (!res.ok) { // name the field the API refused (e.g. config.context_length), not only its complaint
        const field = res.data && res.data.error && res.data.error.field;
        const message = apiError(res.status, res.text);
        showError(form, field && !message.includes(field) ? `${field}: ${message}` : message);
        button.disabled = false;
        return;
      }
      const bar = newJobBar(String(res.data.id));
      bar.querySelector(".label").textContent = t("evaluation queued");
      bar.id = "evaluate-progress";
      form.querySelector(".job-slot").replaceChildren(bar);
      watchJob(bar, (job) => {
        button.disabled = false;
        if (job.status !== "succeeded") { showError(form, t("Evaluation %(state)s", { state: jobLabel(job) })); return; }
        const r = job.result || {};
        const query = new URLSearchParams({ dataset: r.dataset || dataset, dataset_version: r.dataset_version || "",
                                            config: r.config_key || "" });
        setTimeout(() => { window.location.search = query.toString(); }, 800);
      });
    } catch (err) {
      button.disabled = false;
      showError(form, apiError(0, ""));
    }
  });
}

function setupEvaluationCharts(box) {
  if (typeof Plotly === "undefined") { // plotly.js loads async (it is large): draw once it is there
    const script = document.getElementById("plotly-js");
    if (script && !script.dataset.waited) {
      script.dataset.waited = "1";
      script.addEventListener("load", () => setupEvaluationCharts(box));
      return;
    }
    box.replaceChildren(el("p", t("The charting library could not be loaded; reload the page to try again."), "muted"));
    return;
  }
  const data = JSON.parse(document.getElementById("eval-chart-data").textContent);
  const rows = data.rows;
  const names = rows.map((r) => r.label || "v" + r.version);
  const value = (r, name) => (typeof r.metrics[name] === "number" ? r.metrics[name] : null);
  const unit = (name) => (data.heading_units[name] ? ` (${data.heading_units[name]})` : "");
  const label = (name) => data.labels[name] + " " + (data.lower_is_better[name] ? t("(lower is better)") : t("(higher is better)"));
  // plain numbers on hover and ticks (not "49.54062k"); bytes as MB
  const shown = (name, v) => (v === null || v === undefined ? "—" : name.endsWith("_bytes")
    ? `${(v / 1e6).toLocaleString(undefined, { maximumFractionDigits: 1 })} MB`
    : v.toLocaleString(undefined, { maximumFractionDigits: Math.abs(v) >= 100 ? 1 : 4 }) + (data.units[name] && !name.endsWith("_bytes") ? " " + data.units[name] : ""));
  const layout = (title, extra) => ({
    title: { text: title, font: { size: 13 } }, height: 300, margin: { l: 72, r: 16, t: 44, b: 56 },
    font: { size: 11 }, showlegend: false, separators: ".,", ...(extra || {}),
  });
  const axis = (name) => ({ title: { text: data.labels[name] + unit(name) }, tickformat: ",~r", rangemode: "tozero",
                            automargin: true });
  const bars = (name, color) => [{
    type: "bar", x: names, y: rows.map((r) => value(r, name)), marker: { color },
    text: rows.map((r) => shown(name, value(r, name))), textposition: "auto", cliponaxis: false,
    hovertext: rows.map((r, i) => `${names[i]}: ${shown(name, value(r, name))}`), hoverinfo: "text",
  }];
  const opts = { displayModeBar: false, responsive: true };
  const draw = (id, traces, lay) => { const node = document.getElementById(id); if (node) Plotly.newPlot(node, traces, lay, opts); };
  const versionAxis = { title: { text: t("version") }, type: "category", automargin: true };
  draw("chart-quality", bars(data.quality, "#3b4bd8"),
       layout(label(data.quality), { xaxis: versionAxis, yaxis: axis(data.quality) }));
  draw("chart-speed", bars(data.speed, "#1f8a4c"),
       layout(label(data.speed), { xaxis: versionAxis, yaxis: axis(data.speed) }));
  const speeds = rows.map((r) => value(r, data.speed) || 0);
  const top = Math.max(...speeds, 1e-9);
  draw("chart-tradeoff", [{
    type: "scatter", mode: "markers+text", text: names, textposition: "middle right", cliponaxis: false,
    x: rows.map((r) => (r.metrics.size_bytes || 0) / 1e6), y: rows.map((r) => value(r, data.quality)),
    marker: { size: speeds.map((s) => 10 + 30 * (s / top)), color: "#d8553b", opacity: 0.75 },
    hovertext: rows.map((r, i) => `${names[i]}: ${data.labels[data.quality]} ${shown(data.quality, value(r, data.quality))}`
      + ` · ${t("size")} ${shown("size_bytes", r.metrics.size_bytes || 0)} · ${data.labels[data.speed]} ${shown(data.speed, speeds[i])}`),
    hoverinfo: "text",
  }], layout(t("%(quality)s vs size (marker: %(speed)s)", { quality: data.labels[data.quality], speed: data.labels[data.speed] }),
             { xaxis: { title: { text: t("size (MB)") }, rangemode: "tozero", tickformat: ",~r", automargin: true },
               yaxis: { ...axis(data.quality), rangemode: "normal" }, margin: { l: 72, r: 64, t: 44, b: 56 } }));
  box.dataset.drawn = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("#evaluate-form").forEach(setupEvaluateForm);
  document.querySelectorAll("#eval-charts").forEach(setupEvaluationCharts);
});
