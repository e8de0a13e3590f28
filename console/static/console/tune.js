// Tauon console, tune result: throughput against p99 TTFT per trial, the Pareto front, the TTFT target line
// and the recommended trial; "Apply" posts to /api/deployments/{name}/apply-tune (session + CSRF).
"use strict";

function drawTuneChart() {
  const node = document.getElementById("tune-chart");
  if (!node || typeof Plotly === "undefined") return;
  const data = JSON.parse(document.getElementById("tune-chart-data").textContent);
  const L = data.labels;
  const traces = [
    { type: "scatter", mode: "markers+text", name: L.trials, x: data.points.map((p) => p.x),
      y: data.points.map((p) => p.y), text: data.points.map((p) => "#" + p.n), textposition: "top center",
      marker: { size: 10, color: "#3b4bd8" } },
    { type: "scatter", mode: "lines", name: L.front, x: data.front.map((p) => p[0]), y: data.front.map((p) => p[1]),
      line: { color: "#1f8a4c", dash: "dot" } },
  ];
  if (data.recommended) {
    traces.push({ type: "scatter", mode: "markers", name: L.recommended, x: [data.recommended[0]],
      y: [data.recommended[1]], marker: { size: 16, symbol: "star", color: "#b7791f" } });
  }
  const shapes = [];
  if (data.limit) {
    shapes.push({ type: "line", xref: "x", yref: "paper", x0: data.limit, x1: data.limit, y0: 0, y1: 1,
      line: { color: "#d8553b", dash: "dash" } });
    traces.push({ type: "scatter", mode: "lines", name: L.limit, x: [data.limit, data.limit], y: [null, null],
      line: { color: "#d8553b", dash: "dash" } });
  }
  Plotly.newPlot(node, traces, {
    height: 320, margin: { l: 56, r: 12, t: 16, b: 44 }, font: { size: 11 }, shapes,
    xaxis: { title: { text: L.x }, rangemode: "tozero" }, yaxis: { title: { text: L.y }, rangemode: "tozero" },
    legend: { orientation: "h", y: -0.3 },
  }, { displayModeBar: false, responsive: true });
}

document.addEventListener("DOMContentLoaded", () => {
  if (typeof Plotly === "undefined") {
    const script = document.getElementById("tune-plotly-js");
    if (script) script.addEventListener("load", drawTuneChart);
  } else {
    drawTuneChart();
  }
  const start = document.getElementById("tune-start");
  if (start) {
    start.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = new FormData(start);
      const constraints = {};
      for (const name of ["ttft_p99_ms", "max_perplexity_ratio"]) if (f.get(name)) constraints[name] = Number(f.get(name));
      const params = { deployment: start.dataset.deployment, objective: f.get("objective"),
        max_trials: Number(f.get("max_trials")), constraints };
      const res = await apiCall("/api/jobs/", "POST", { kind: "tune", params }, start);
      if (res.ok && res.data) { window.location.href = `/jobs/${res.data.id}/`; return; }
      const box = start.querySelector(".form-error");
      box.textContent = (res.data && res.data.error && res.data.error.message) || res.text;
      box.hidden = false;
    });
  }
  const form = document.getElementById("tune-apply");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const note = document.getElementById("tune-apply-note");
    const res = await apiCall(`/api/deployments/${form.dataset.deployment}/apply-tune`, "POST",
      { job: Number(form.dataset.job) }, form);
    if (res.ok) { window.location.href = form.dataset.doneUrl; return; }
    note.textContent = (res.data && res.data.error && res.data.error.message) || res.text;
    note.classList.add("error");
  });
});
