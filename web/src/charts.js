// Bar charts with axes and values on hover (Chart.js, bundled by esbuild), each with its numbers
// in a table beside it (for screen readers, and for anyone who wants the exact values). A daily
// chart of the current month may also show where the month is heading (see forecast.js): the
// days left as lighter bars, and on a second axis the cumulative cost to month end with its
// 80% band and the monthly limit.
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  LineController,
  LineElement,
  LinearScale,
  PointElement,
  Tooltip,
} from "chart.js";
import { el, fillTable } from "./dom.js";
import { forecastParts, forecastText } from "./forecast.js";
import { moneyDigits, usd, usdAxis, usdExact } from "./format.js";

Chart.register(BarController, BarElement, CategoryScale, LinearScale, LineController, LineElement, PointElement, Filler, Tooltip);

const INK = "#1d2433";
const MUTED = "#5b6374";
const GRID = "#e3e6ee";
const ACCENT = "#3b6ef5";
const PROJECTED = "rgba(59, 110, 245, 0.35)";
const BAND = "rgba(59, 110, 245, 0.12)";
const LIMIT = "#b42318";

/**
 * A bar chart in `box` (a .chart-box holding a <canvas> and a .chart-tip element), and its numbers
 * in `table`. `points`: [{label, tick, value, detail}] (detail: the tooltip's second line).
 * `note` (optional): where a projection is put in words, with the chart's legend.
 */
export class BarChart {
  constructor({ box, table, valueLabel, valueFormat, name, note = null }) {
    this.box = box;
    this.table = table;
    this.valueLabel = valueLabel;
    this.valueFormat = valueFormat;
    this.canvas = box.querySelector("canvas");
    this.tip = box.querySelector(".chart-tip");
    this.name = name;
    this.note = note;
    this.points = [];
    this.plan = null;
    this.chart = null;
  }

  /**
   * Draw `points`. `projection` (optional, a daily chart of the current month): {plan (projectMonth's
   * answer, or null), forecast, limit (undefined: none known), limitWord, month}.
   */
  render(points, description, projection = null) {
    const plan = projection?.plan ?? null;
    this.points = points;
    this.plan = plan;
    const words = plan ? forecastText(forecastParts(projection.forecast, { ...projection, interval: true })) : "";
    const limitText = plan && typeof projection.limit === "number" ? ` The monthly ${projection.limitWord ?? "limit"} is ${usd(projection.limit)}.` : "";
    this.canvas.setAttribute(
      "aria-label",
      `${this.name}: ${description}.${plan ? ` Projected: ${words}.${limitText}` : ""} The numbers are in the table below the chart.`,
    );
    this.#note(projection, words);
    const rows = plan ? points.map((p, i) => ({ ...p, ...plan.days[i], future: i > plan.today })) : points;
    const columns = [
      { key: "label", label: this.name.includes("month") ? "Month" : "Day" },
      { key: "value", label: this.valueLabel, money: true },
      { key: "detail", label: "Calls", num: true, value: (p) => p.calls, format: (v) => v.toLocaleString("en-US") },
    ];
    if (plan) {
      const digits = moneyDigits(rows.flatMap((r) => [r.cumulative, r.low, r.high]));
      columns.push(
        { key: "projected", label: "Projected", money: true },
        {
          key: "cumulative",
          label: "Month so far",
          num: true,
          format: (v, r) => (r.future ? `${usd(v, digits)} (projected)` : usd(v, digits)),
          title: (v) => usdExact(v),
        },
        {
          key: "range",
          label: "80% interval",
          num: true,
          value: (r) => (r.future ? `${r.low}..${r.high}` : ""), // (low..high: the tests read it)
          format: (_, r) => (r.future ? `${usd(r.low, digits)}–${usd(r.high, digits)}` : "—"),
        },
      );
    }
    fillTable(this.table, columns, rows, plan ? { caption: `Projected: ${words}` } : {});
    const data = { labels: points.map((p) => p.tick), datasets: this.#datasets(points, plan, projection?.limit) };
    if (this.chart) {
      this.chart.data = data;
      this.#axes(this.chart.options.scales, Boolean(plan));
      this.chart.update("none");
      return;
    }
    const scales = {
      x: {
        grid: { display: false },
        ticks: { color: MUTED, autoSkip: true, maxRotation: 0, autoSkipPadding: 8 },
      },
      y: {
        beginAtZero: true,
        grid: { color: GRID },
        border: { display: false },
        ticks: { color: MUTED, maxTicksLimit: 6, callback: (value) => usdAxis(value) },
        title: { display: false, text: "A day", color: MUTED },
      },
      y2: {
        position: "right",
        beginAtZero: true,
        grid: { drawOnChartArea: false },
        border: { display: false },
        ticks: { color: MUTED, maxTicksLimit: 6, callback: (value) => usdAxis(value) },
        title: { display: true, text: "Month so far", color: MUTED },
      },
    };
    this.#axes(scales, Boolean(plan));
    this.chart = new Chart(this.canvas, {
      type: "bar",
      data,
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales,
        plugins: {
          legend: { display: false },
          tooltip: { enabled: false, external: (context) => this.#tooltip(context) },
        },
      },
    });
  }

  #axes(scales, projected) {
    scales.y2.display = projected;
    scales.y.title.display = projected;
  }

  // Dataset 0 is the actual cost (the tooltip is placed over its bars); with a plan, the days left's
  // projected cost (lighter bars), and on the second axis the cumulative cost (actual: solid;
  // projected: dashed), its 80% band (filled between low and high) and the limit (red, dashed).
  #datasets(points, plan, limit) {
    const bars = { grouped: false, borderRadius: 2, yAxisID: "y", order: 2 };
    const datasets = [{ ...bars, data: points.map((p) => p.value), backgroundColor: ACCENT, hoverBackgroundColor: INK }];
    if (!plan) return datasets;
    const t = plan.today;
    const line = { type: "line", yAxisID: "y2", pointRadius: 0, pointHoverRadius: 0, borderWidth: 2, order: 1, fill: false };
    const at = (test, value) => plan.days.map((d, i) => (test(i) ? value(d, i) : null));
    datasets.push(
      { ...bars, order: 3, data: plan.days.map((d) => d.projected), backgroundColor: PROJECTED, hoverBackgroundColor: ACCENT },
      { ...line, data: at((i) => i <= t, (d) => d.cumulative), borderColor: INK },
      { ...line, data: at((i) => i >= t, (d) => d.cumulative), borderColor: INK, borderDash: [6, 4] },
      { ...line, data: at((i) => i >= t, (d, i) => (i === t ? d.cumulative : d.low)), borderWidth: 0 },
      { ...line, data: at((i) => i >= t, (d, i) => (i === t ? d.cumulative : d.high)), borderWidth: 0, backgroundColor: BAND, fill: "-1" },
    );
    if (typeof limit === "number") {
      datasets.push({ ...line, data: plan.days.map(() => limit), borderColor: LIMIT, borderWidth: 1.5, borderDash: [2, 3] });
    }
    return datasets;
  }

  /** The projection in words and the legend, under the chart (hidden without a projection). */
  #note(projection, words) {
    if (!this.note) return;
    const plan = projection?.plan;
    this.note.hidden = !plan;
    if (!plan) {
      this.note.replaceChildren();
      return;
    }
    const swatch = (className) => el("span", { className: `swatch ${className}`, attrs: { "aria-hidden": "true" } });
    const parts = forecastParts(projection.forecast, { ...projection, interval: true });
    this.note.replaceChildren(
      el(
        "span",
        { className: "forecast-words" },
        "Projected: ",
        ...parts.map((part) =>
          Array.isArray(part) ? el("strong", { dataset: { key: part[1], value: part[2] }, textContent: part[0] }) : part,
        ),
        ".",
      ),
      el(
        "span",
        { className: "legend" },
        swatch("used"),
        " cost ",
        swatch("projected"),
        " projected · ",
        swatch("line"),
        " month so far (dashed: projected) ",
        swatch("band"),
        " 80% interval",
        ...(typeof projection.limit === "number" ? [" ", swatch("limit"), ` monthly ${projection.limitWord ?? "limit"}`] : []),
      ),
    );
    this.note.dataset.words = words;
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
    const day = this.plan?.days[index];
    let projected = null;
    if (day && index > this.plan.today) {
      projected = `Projected ${this.valueFormat(day.projected)} · month so far ${this.valueFormat(day.cumulative)} (80%: ${this.valueFormat(day.low)}–${this.valueFormat(day.high)})`;
    } else if (day) {
      projected = `Month so far ${this.valueFormat(day.cumulative)}`;
    }
    this.tip.dataset.index = String(index);
    this.tip.dataset.label = point.label;
    this.tip.dataset.value = String(point.value);
    this.tip.replaceChildren(
      el("strong", { textContent: point.label }),
      el("span", { textContent: `${this.valueLabel} ${this.valueFormat(point.value)}` }),
      point.detail ? el("span", { textContent: point.detail }) : null,
      projected ? el("span", { textContent: projected }) : null,
    );
    this.tip.hidden = false;
    const bar = chart.getDatasetMeta(0).data[index];
    const width = this.tip.offsetWidth;
    const left = Math.min(Math.max(bar.x - width / 2, 0), Math.max(chart.width - width, 0));
    this.tip.style.left = `${left}px`;
    this.tip.style.top = `${Math.max(Math.min(bar.y, chart.chartArea.bottom) - this.tip.offsetHeight - 8, 0)}px`;
  }
}
