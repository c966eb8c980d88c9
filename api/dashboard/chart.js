// Small SVG charts drawn from the API's JSON: a histogram, horizontal bars, paired bars.
// Plain SVG elements with CSS classes (colours live in style.css); no library, no inline styles.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function tip(node, text) {
  node.appendChild(el("title", {}, text));
  return node;
}

// A short number: 3 significant digits, k/M for big counts.
export function fmt(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return "-";
  const a = Math.abs(x);
  if (a >= 1e6) return (x / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e4) return (x / 1e3).toFixed(a >= 1e5 ? 0 : 1) + "k";
  if (Number.isInteger(x)) return String(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toFixed(2);
  if (a === 0) return "0";
  return x.toPrecision(2);
}

// A histogram record {score, count, edges, counts} as bars over its range; onBar(lo, hi) on click.
export function histogram(h, { onBar = null, width = 360, height = 150 } = {}) {
  const pad = { l: 34, r: 8, t: 8, b: 22 };
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart histogram", role: "img" });
  svg.appendChild(el("title", {}, `${h.score}: ${h.count} samples`));
  if (!h.count) {
    svg.appendChild(el("text", { x: width / 2, y: height / 2, class: "empty", "text-anchor": "middle" }, "no values"));
    return svg;
  }
  const w = width - pad.l - pad.r, ht = height - pad.t - pad.b;
  const top = Math.max(...h.counts);
  const bw = w / h.counts.length;
  h.counts.forEach((n, i) => {
    const bh = top ? (n / top) * ht : 0;
    const lo = h.edges[i], hi = h.edges[i + 1];
    const bar = el("rect", {
      x: pad.l + i * bw + 0.5, y: pad.t + ht - bh, width: Math.max(bw - 1, 1), height: Math.max(bh, n ? 1 : 0),
      class: "bar" + (onBar ? " clickable" : ""), "data-lo": lo, "data-hi": hi,
    });
    tip(bar, `${fmt(lo)} - ${fmt(hi)}: ${n}`);
    if (onBar) bar.addEventListener("click", () => onBar(lo, hi));
    svg.appendChild(bar);
  });
  svg.appendChild(el("line", { x1: pad.l, x2: pad.l + w, y1: pad.t + ht, y2: pad.t + ht, class: "axis" }));
  svg.appendChild(el("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end", class: "tick" }, fmt(top)));
  svg.appendChild(el("text", { x: pad.l - 4, y: pad.t + ht, "text-anchor": "end", class: "tick" }, "0"));
  const edges = h.edges, mid = edges[Math.floor(edges.length / 2)];
  svg.appendChild(el("text", { x: pad.l, y: height - 6, class: "tick" }, fmt(edges[0])));
  svg.appendChild(el("text", { x: pad.l + w / 2, y: height - 6, "text-anchor": "middle", class: "tick" }, fmt(mid)));
  svg.appendChild(el("text", { x: pad.l + w, y: height - 6, "text-anchor": "end", class: "tick" }, fmt(edges[edges.length - 1])));
  return svg;
}

// Horizontal bars: items [{label, value, href?}], longest first as given.
export function bars(items, { width = 360, row = 18, label = 130, format = fmt } = {}) {
  const height = Math.max(items.length * row + 4, 24);
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart bars", role: "img" });
  if (!items.length) {
    svg.appendChild(el("text", { x: 4, y: 16, class: "empty" }, "none"));
    return svg;
  }
  const top = Math.max(...items.map((d) => d.value), 1e-12);
  const w = width - label - 50;
  items.forEach((d, i) => {
    const y = 2 + i * row;
    const text = el("text", { x: label - 6, y: y + row * 0.7, "text-anchor": "end", class: "label" }, d.label);
    const bar = el("rect", { x: label, y: y + 2, width: Math.max((d.value / top) * w, d.value ? 1 : 0), height: row - 5, class: "bar" });
    tip(bar, `${d.label}: ${format(d.value)}`);
    const value = el("text", { x: label + (d.value / top) * w + 4, y: y + row * 0.7, class: "value" }, format(d.value));
    if (d.href) {
      const a = el("a", { href: d.href });
      a.append(text, bar, value);
      svg.appendChild(a);
    } else svg.append(text, bar, value);
  });
  return svg;
}

// Two values per label (e.g. a concept's share before and after balancing): [{label, a, b}];
// a null value is drawn as missing (not known), not as zero.
export function paired(items, { names = ["a", "b"], width = 360, row = 24, label = 110, format = fmt } = {}) {
  const height = items.length * row + 22;
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart paired", role: "img" });
  const values = items.flatMap((d) => [d.a, d.b]).filter((v) => v !== null && v !== undefined);
  const top = Math.max(...values, 1e-12);
  const w = width - label - 46;
  items.forEach((d, i) => {
    const y = 2 + i * row;
    svg.appendChild(el("text", { x: label - 6, y: y + row * 0.6, "text-anchor": "end", class: "label" }, d.label));
    [["a", d.a, 0], ["b", d.b, 1]].forEach(([cls, v, k]) => {
      const yy = y + 2 + k * ((row - 6) / 2);
      if (v === null || v === undefined) {
        svg.appendChild(el("text", { x: label + 2, y: yy + 8, class: "missing" }, "n/a"));
        return;
      }
      svg.appendChild(tip(el("rect", { x: label, y: yy, width: Math.max((v / top) * w, 1), height: (row - 8) / 2, class: `bar ${cls}` }), `${d.label} ${names[k]}: ${format(v)}`));
      svg.appendChild(el("text", { x: label + (v / top) * w + 3, y: yy + 8, class: "value small" }, format(v)));
    });
  });
  const ly = height - 8;
  names.forEach((name, k) => {
    svg.appendChild(el("rect", { x: label + k * 90, y: ly - 8, width: 10, height: 10, class: `bar ${k ? "b" : "a"}` }));
    svg.appendChild(el("text", { x: label + k * 90 + 14, y: ly, class: "label" }, name));
  });
  return svg;
}
