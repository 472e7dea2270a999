/* Checkpoint sweep chart: judge score with its 95% CI (left axis) and mean answer length
 * (right axis) against the step; the length bound as a dashed line, the proposed
 * checkpoint circled. Data from the page's JSON script (sweep.page_context). */
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("sweep-chart-data").textContent);
  const plus = data.score.map((s, i) => (s === null ? null : data.ci_high[i] - s));
  const minus = data.score.map((s, i) => (s === null ? null : s - data.ci_low[i]));
  const traces = [
    {
      x: data.steps, y: data.score, name: "judge score", type: "scatter", mode: "lines+markers",
      error_y: { type: "data", symmetric: false, array: plus, arrayminus: minus },
    },
    {
      x: data.steps, y: data.length, name: "mean length (words)", type: "scatter",
      mode: "lines+markers", yaxis: "y2", line: { dash: "dot" },
    },
  ];
  const i = data.steps.indexOf(data.proposed);
  if (i >= 0) {
    traces.push({
      x: [data.proposed], y: [data.score[i]], name: "proposed", type: "scatter", mode: "markers",
      marker: { size: 18, symbol: "circle-open", line: { width: 3 } },
    });
  }
  const shapes = data.bound === null ? [] : [{
    type: "line", xref: "paper", x0: 0, x1: 1, yref: "y2", y0: data.bound, y1: data.bound,
    line: { dash: "dash", width: 1, color: "#c92a2a" },
  }];
  Plotly.newPlot("sweep-chart", traces, {
    xaxis: { title: { text: "step" } },
    yaxis: { title: { text: "judge score" } },
    yaxis2: {
      title: { text: "mean length (words)" },
      overlaying: "y", side: "right", rangemode: "tozero",
    },
    shapes, margin: { t: 20 }, legend: { orientation: "h", y: -0.2 },
  }, { displayModeBar: false, responsive: true });
})();
