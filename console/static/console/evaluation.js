// Tauon console, evaluation page: start an evaluation through the REST API, follow its progress bar,
// then show the comparison (table and plotly charts) of the stored results. Uses app.js's helpers.
"use strict";

function setupEvaluateForm(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showError(form, "");
    const versions = [...form.querySelectorAll("input[name=versions]:checked")].map((box) => Number(box.value));
    if (!versions.length) { showError(form, "Tick at least one version."); return; }
    let config = {};
    const extra = form.elements.config.value.trim();
    if (extra) {
      try { config = JSON.parse(extra); } catch (err) { showError(form, "The config is not valid JSON: " + err.message); return; }
      if (!config || typeof config !== "object" || Array.isArray(config)) { showError(form, "The config must be a JSON object."); return; }
    }
    const quantization = form.elements.quantization.value;
    if (quantization !== "none") config = { ...config, engine: { ...(config.engine || {}), quantization } };
    const dataset = form.elements.dataset.value;
    const params = { model: form.getAttribute("data-model"), versions, dataset, config }; // (form.dataset is the select)
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const res = await apiCall("/api/jobs/", "POST", { kind: "evaluate", params }, form);
      if (!res.ok) { showError(form, apiError(res.status, res.text)); button.disabled = false; return; }
      const bar = newJobBar(String(res.data.id));
      bar.querySelector(".label").textContent = "evaluation queued";
      bar.id = "evaluate-progress";
      form.querySelector(".job-slot").replaceChildren(bar);
      watchJob(bar, (job) => {
        button.disabled = false;
        if (job.status !== "succeeded") { showError(form, "Evaluation " + jobLabel(job)); return; }
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
    box.replaceChildren(el("p", "The charting library could not be loaded; reload the page to try again.", "muted"));
    return;
  }
  const data = JSON.parse(document.getElementById("eval-chart-data").textContent);
  const rows = data.rows;
  const names = rows.map((r) => r.label || "v" + r.version);
  const value = (r, name) => (typeof r.metrics[name] === "number" ? r.metrics[name] : null);
  const label = (name) => data.labels[name] + (data.lower_is_better[name] ? " (lower is better)" : " (higher is better)");
  const layout = (title, extra) => ({
    title: { text: title, font: { size: 13 } }, height: 280, margin: { l: 56, r: 12, t: 40, b: 44 },
    font: { size: 11 }, showlegend: false, ...(extra || {}),
  });
  const opts = { displayModeBar: false, responsive: true };
  const draw = (id, traces, lay) => { const node = document.getElementById(id); if (node) Plotly.newPlot(node, traces, lay, opts); };
  draw("chart-quality", [{ type: "bar", x: names, y: rows.map((r) => value(r, data.quality)), marker: { color: "#3b4bd8" } }],
       layout(label(data.quality)));
  draw("chart-speed", [{ type: "bar", x: names, y: rows.map((r) => value(r, data.speed)), marker: { color: "#1f8a4c" } }],
       layout(label(data.speed)));
  const speeds = rows.map((r) => value(r, data.speed) || 0);
  const top = Math.max(...speeds, 1e-9);
  draw("chart-tradeoff", [{
    type: "scatter", mode: "markers+text", text: names, textposition: "top center",
    x: rows.map((r) => (r.metrics.size_bytes || 0) / 1e6), y: rows.map((r) => value(r, data.quality)),
    marker: { size: speeds.map((s) => 10 + 30 * (s / top)), color: "#d8553b", opacity: 0.75 },
    hovertext: rows.map((r, i) => `${names[i]}: ${data.labels[data.speed]} ${speeds[i].toFixed(1)}`), hoverinfo: "text",
  }], layout(`${data.labels[data.quality]} vs size (marker: ${data.labels[data.speed]})`,
             { xaxis: { title: { text: "size (MB)" }, rangemode: "tozero" } }));
  box.dataset.drawn = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("#evaluate-form").forEach(setupEvaluateForm);
  document.querySelectorAll("#eval-charts").forEach(setupEvaluationCharts);
});
