// The one chart component of the run report and the studio: loss, learning rate and tokens/s over
// training time, drawn on a canvas by the vendored uPlot (vendor/uplot, loaded first: the global
// `uPlot`). A classic script, no build step: it defines window.TextweaverChart and adds no inline
// styles, markup or event-handler attributes, so it runs from a file under `script-src 'self'`
// (studio) and inlined under the hash-only policy of the self-contained report.
//
//   const chart = TextweaverChart.lossChart(element, {title, height, yLabel});
//   chart.setRuns([{name, points: [{elapsed_s, step, train_loss, val_loss, lr, tokens_per_s}]}]);
//   chart.append(name, point);   // one metrics.jsonl record, as it arrives
//   chart.destroy();
//   TextweaverChart.lineChart(element, {title, yLabel, ariaLabel, height}).setSeries(xs, ys);
//
// The element gets role="img" and an aria-label that says what the chart shows, and the chart
// follows the element's width (ResizeObserver), down to a phone's 360 px.
(function () {
  "use strict";

  const LOSS_HEIGHT = 300;
  const LINE_HEIGHT = 200;
  const DEFAULT_UNIT = "nats/char";
  // after the page's --accent: distinct on light and dark backgrounds
  const PALETTE = ["#d9480f", "#2b8a3e", "#ae3ec9", "#1098ad", "#e67700", "#c2255c"];
  // x-axis tick spacings in seconds, so ticks land on round clock values (0:30, 1:00, 5:00 ...)
  const TIME_STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
    43200, 86400];
  const TIME_LABEL = "time trained";

  // 75 -> "1:15", 3725 -> "1:02:05"; with tenths (a run of seconds): 1.5 -> "0:01.5"
  function clock(seconds, tenths = false) {
    const s = tenths ? Math.round(seconds * 10) / 10 : Math.round(seconds);
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = s - h * 3600 - m * 60;
    const pad = (n) => (tenths ? n.toFixed(1).padStart(4, "0") : String(n).padStart(2, "0"));
    return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + pad(rest);
  }

  function shortNumber(v) {
    return v == null ? "–" : v.toLocaleString("en-US", { maximumSignificantDigits: 3 });
  }

  function finite(v) {
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }

  // The page's colours (web/style.css custom properties), so the chart follows light and dark mode.
  function theme(element) {
    const css = getComputedStyle(element);
    const get = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    return { text: get("--text", "#1d1d1f"), grid: get("--border", "#d9d7d2"), accent: get("--accent", "#2f5bd3") };
  }

  function innerWidth(element) {
    const css = getComputedStyle(element);
    const padding = parseFloat(css.paddingLeft) + parseFloat(css.paddingRight);
    return Math.max(120, Math.floor(element.clientWidth - padding));
  }

  // uPlot draws series over one shared x array: the union of every column's times, sorted, with
  // null where a column has no value (spanGaps joins the line across them).
  function align(columns) {
    const xs = new Set();
    const maps = columns.map(({ x, y }) => {
      const map = new Map();
      x.forEach((t, i) => {
        if (finite(t) === null) return;
        xs.add(t);
        if (finite(y[i]) !== null) map.set(t, y[i]);
      });
      return map;
    });
    const sorted = Array.from(xs).sort((a, b) => a - b);
    return [sorted, ...maps.map((map) => sorted.map((t) => (map.has(t) ? map.get(t) : null)))];
  }

  // A uPlot that fills `element`'s width and keeps doing so; `series` excludes the x series.
  function plot(element, { title, height, yLabel, series, data }) {
    const colours = theme(element);
    const axis = { stroke: colours.text, grid: { stroke: colours.grid, width: 1 }, ticks: { stroke: colours.grid, width: 1 } };
    const options = {
      title: title || undefined,
      width: innerWidth(element),
      height,
      scales: { x: { time: false } },
      series: [{ label: "time", value: (u, v) => (v == null ? "–" : clock(v, v < 60)) }, ...series],
      axes: [
        { ...axis, label: TIME_LABEL, incrs: TIME_STEPS,
          values: (u, splits, axis, space, incr) => splits.map((v) => clock(v, incr < 1)) },
        { ...axis, label: yLabel, size: 56, values: (u, splits) => splits.map(shortNumber) },
      ],
    };
    return new uPlot(options, data, element);
  }

  // Role, name and resizing: what both chart kinds do to their element.
  function host(element) {
    element.setAttribute("role", "img");
    element.style.minWidth = "0"; // in a grid or flex row, let the chart shrink with the page
    let current = null;
    const observer = new ResizeObserver(() => {
      const width = innerWidth(element);
      if (current && width !== current.width) current.setSize({ width, height: current.height });
    });
    observer.observe(element);
    return {
      set(u) {
        if (current) current.destroy();
        current = u;
      },
      get: () => current,
      label: (text) => element.setAttribute("aria-label", text),
      destroy() {
        observer.disconnect();
        if (current) current.destroy();
        current = null;
        element.removeAttribute("role");
        element.removeAttribute("aria-label");
      },
    };
  }

  function lossChart(element, { title = "", height = LOSS_HEIGHT, yLabel = DEFAULT_UNIT } = {}) {
    const h = host(element);
    let runs = [];
    let plotted = ""; // the run names the current plot has series for

    function data() {
      const columns = [];
      for (const run of runs) {
        const x = run.points.map((p) => p.elapsed_s);
        columns.push({ x, y: run.points.map((p) => p.train_loss) }, { x, y: run.points.map((p) => p.val_loss) });
      }
      return align(columns);
    }

    // a training curve is drawn without markers, unless it has a single point (a line of one point is invisible)
    const alone = (u, i) => u.data[i].filter((v) => v != null).length === 1;

    function series() {
      const accent = theme(element).accent;
      const value = (u, v) => (v == null ? "–" : v.toFixed(3));
      return runs.flatMap((run, i) => {
        const colour = i === 0 ? accent : PALETTE[(i - 1) % PALETTE.length];
        const name = runs.length > 1 ? run.name + " " : "";
        return [
          { label: name + "train", stroke: colour, width: 1, dash: [6, 4], spanGaps: true, value,
            points: { show: alone, size: 5, fill: colour, stroke: colour } },
          { label: name + "validation", stroke: colour, width: 2, spanGaps: true, value,
            points: { show: true, size: 6, fill: colour, stroke: colour } },
        ];
      });
    }

    function describe() {
      if (!runs.some((run) => run.points.length)) return "Training and validation loss over time: no records yet";
      const parts = runs.map((run) => {
        const last = run.points.map((p) => finite(p.val_loss)).filter((v) => v !== null).pop();
        return run.name + (last == null ? ", no validation loss yet" : `, latest validation loss ${last.toFixed(3)} ${yLabel}`);
      });
      return "Training and validation loss over time: " + parts.join("; ");
    }

    function draw() {
      const names = JSON.stringify(runs.map((run) => run.name));
      if (names !== plotted || !h.get()) {
        h.set(plot(element, { title, height, yLabel, series: series(), data: data() }));
        plotted = names;
      } else {
        h.get().setData(data());
      }
      h.label(describe());
    }

    draw();
    return {
      setRuns(newRuns) {
        runs = newRuns.map((run) => ({ name: String(run.name), points: Array.from(run.points || []) }));
        draw();
      },
      append(runName, point) {
        const run = runs.find((r) => r.name === String(runName));
        if (run) run.points.push(point);
        else runs.push({ name: String(runName), points: [point] });
        draw();
      },
      destroy: () => h.destroy(),
    };
  }

  function lineChart(element, { title = "", yLabel = "", ariaLabel = "", height = LINE_HEIGHT } = {}) {
    const h = host(element);
    const value = (u, v) => shortNumber(v);
    h.set(plot(element, {
      title, height, yLabel,
      series: [{ label: yLabel, stroke: theme(element).accent, width: 2, spanGaps: true, value }],
      data: [[], []],
    }));
    h.label(ariaLabel || title || yLabel);
    return {
      setSeries(xs, ys) {
        h.get().setData(align([{ x: Array.from(xs), y: Array.from(ys) }]));
      },
      destroy: () => h.destroy(),
    };
  }

  window.TextweaverChart = { lossChart, lineChart };
})();
