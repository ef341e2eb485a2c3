// Bar charts with axes and values on hover (Chart.js, bundled by esbuild), each with its numbers
// in a table beside it (for screen readers, and for anyone who wants the exact values).
import { BarController, BarElement, CategoryScale, Chart, LinearScale, Tooltip } from "chart.js";
import { el, fillTable } from "./dom.js";
import { usdAxis } from "./format.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip);

const INK = "#1d2433";
const MUTED = "#5b6374";
const GRID = "#e3e6ee";
const ACCENT = "#3b6ef5";

/**
 * A bar chart in `box` (a .chart-box holding a <canvas> and a .chart-tip element), and its numbers
 * in `table`. `points`: [{label, tick, value, detail}] (detail: the tooltip's second line).
 */
export class BarChart {
  constructor({ box, table, valueLabel, valueFormat, name }) {
    this.box = box;
    this.table = table;
    this.valueLabel = valueLabel;
    this.valueFormat = valueFormat;
    this.canvas = box.querySelector("canvas");
    this.tip = box.querySelector(".chart-tip");
    this.name = name;
    this.points = [];
    this.chart = null;
  }

  render(points, description) {
    this.points = points;
    this.canvas.setAttribute("aria-label", `${this.name}: ${description}. The numbers are in the table below the chart.`);
    fillTable(
      this.table,
      [
        { key: "label", label: this.name.includes("month") ? "Month" : "Day" },
        { key: "value", label: this.valueLabel, money: true },
        { key: "detail", label: "Calls", num: true, value: (p) => p.calls, format: (v) => v.toLocaleString("en-US") },
      ],
      points,
    );
    const data = {
      labels: points.map((p) => p.tick),
      datasets: [{ data: points.map((p) => p.value), backgroundColor: ACCENT, hoverBackgroundColor: INK, borderRadius: 2 }],
    };
    if (this.chart) {
      this.chart.data = data;
      this.chart.update("none");
      return;
    }
    this.chart = new Chart(this.canvas, {
      type: "bar",
      data,
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: {
            grid: { display: false },
            ticks: { color: MUTED, autoSkip: true, maxRotation: 0, autoSkipPadding: 8 },
          },
          y: {
            beginAtZero: true,
            grid: { color: GRID },
            border: { display: false },
            ticks: { color: MUTED, maxTicksLimit: 6, callback: (value) => usdAxis(value) },
          },
        },
        plugins: {
          legend: { display: false },
          tooltip: { enabled: false, external: (context) => this.#tooltip(context) },
        },
      },
    });
  }

  // The tooltip is HTML (readable by tests, styled like the page), placed over the hovered bar.
  #tooltip({ chart, tooltip }) {
    if (tooltip.opacity === 0 || !tooltip.dataPoints?.length) {
      this.tip.hidden = true;
      return;
    }
    const index = tooltip.dataPoints[0].dataIndex;
    const point = this.points[index];
    if (!point) return;
    this.tip.dataset.index = String(index);
    this.tip.dataset.label = point.label;
    this.tip.dataset.value = String(point.value);
    this.tip.replaceChildren(
      el("strong", { textContent: point.label }),
      el("span", { textContent: `${this.valueLabel} ${this.valueFormat(point.value)}` }),
      point.detail ? el("span", { textContent: point.detail }) : null,
    );
    this.tip.hidden = false;
    const bar = chart.getDatasetMeta(0).data[index];
    const width = this.tip.offsetWidth;
    const left = Math.min(Math.max(bar.x - width / 2, 0), Math.max(chart.width - width, 0));
    this.tip.style.left = `${left}px`;
    this.tip.style.top = `${Math.max(Math.min(bar.y, chart.chartArea.bottom) - this.tip.offsetHeight - 8, 0)}px`;
  }
}
