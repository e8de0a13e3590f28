// Tauon console, job page: a plotly line chart of the job's live series (a fine-tuning's train loss per
// step, its eval loss before and after). It grows as app.js's progress polling of GET /api/jobs/{id}/
// brings new points (the "tauon:job" event); the first drawing is the server's.
"use strict";

const SERIES_COLORS = ["#3b4bd8", "#d8553b", "#1f8a4c", "#b7791f", "#8a3bd8"];

function seriesTraces(series) {
  return Object.entries(series || {}).map(([name, points], i) => {
    const sparse = points.length < 3; // e.g. eval loss: before (step 0) and after: markers joined by a dotted line
    return {
      type: "scatter", mode: sparse ? "lines+markers" : "lines", name: name.replace(/_/g, " "),
      x: points.map((p) => p[0]), y: points.map((p) => p[1]), connectgaps: false,
      line: { color: SERIES_COLORS[i % SERIES_COLORS.length], width: 2, dash: sparse ? "dot" : "solid" },
      marker: { size: 8 },
    };
  });
}

function setupJobChart(node) {
  const data = JSON.parse(document.getElementById("job-series-data").textContent);
  const empty = document.getElementById("job-chart-empty");
  let series = data.series || {};
  let revision = 0;
  const draw = () => {
    const count = Object.values(series).reduce((n, points) => n + points.length, 0);
    if (empty) empty.hidden = count > 0;
    node.hidden = count === 0; // Plotly sizes a chart from its box: draw only once it shows
    if (!count || typeof Plotly === "undefined") return;
    revision += 1;
    const layout = {
      height: 300, margin: { l: 56, r: 12, t: 16, b: 44 }, font: { size: 11 }, datarevision: revision,
      xaxis: { title: { text: data.x }, rangemode: "tozero" }, yaxis: { title: { text: data.y } },
      showlegend: true, legend: { orientation: "h", y: -0.25 },
    };
    Plotly.react(node, seriesTraces(series), layout, { displayModeBar: false, responsive: true });
    node.dataset.points = String(count);
  };
  document.addEventListener("tauon:job", (event) => {
    const job = event.detail;
    if (String(job.id) !== node.dataset.jobSeries || !job.series) return;
    if (JSON.stringify(job.series) === JSON.stringify(series)) return;
    series = job.series;
    draw();
  });
  if (typeof Plotly === "undefined") { // plotly.js loads async (it is large): draw once it is there
    const script = document.getElementById("plotly-js");
    if (script) {
      script.addEventListener("load", draw);
      script.addEventListener("error", () => {
        if (empty) { empty.textContent = t("The charting library could not be loaded; reload the page to try again."); empty.hidden = false; }
      });
    }
    return;
  }
  draw();
}

document.addEventListener("DOMContentLoaded", () => {
  const node = document.getElementById("job-chart");
  if (node) setupJobChart(node);
});
