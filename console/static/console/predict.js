// Tauon console, predict result: the label distribution of a "Predict on a dataset" job as a plotly bar chart.
"use strict";

function drawPredictChart() {
  const node = document.getElementById("predict-chart");
  if (!node || typeof Plotly === "undefined") return;
  const data = JSON.parse(document.getElementById("predict-chart-data").textContent);
  Plotly.newPlot(node, [{ type: "bar", x: data.labels, y: data.counts, marker: { color: "#3b4bd8" } }], {
    height: 300, margin: { l: 48, r: 12, t: 16, b: 64 }, font: { size: 11 },
    xaxis: { type: "category", automargin: true }, yaxis: { rangemode: "tozero" },
  }, { displayModeBar: false, responsive: true });
}

document.addEventListener("DOMContentLoaded", () => {
  if (typeof Plotly === "undefined") {
    const script = document.getElementById("predict-plotly-js");
    if (script) script.addEventListener("load", drawPredictChart);
  } else {
    drawPredictChart();
  }
});
