// zcurate dashboard: five pages over the service's JSON routes, hash navigation (#overview,
// #explorer?clip_score_min=0.3, ...). The API key is asked for once and kept in sessionStorage;
// every request sends it as Authorization: Bearer, thumbnails included (fetched, shown as blob URLs).

import { bars, fmt, histogram, paired } from "./chart.js";

const KEY = "zcurate.key";
const THUMB_PARALLEL = 6; // concurrent thumbnail fetches: the browser's own per-host limit on HTTP/1.1
const PAGE_SIZE = 60; // explorer cells per page: four to five screens of 160 px cells on a laptop
const RANGES = [
  ["clip_score", "clip score"],
  ["text_area_ratio", "OCR text area"],
  ["nsfw_score", "NSFW"],
  ["blur", "sharpness (Laplacian var.)"],
  ["width", "width (px)"],
  ["height", "height (px)"],
];
const HISTOGRAMS = [...RANGES, ["ocr_conf_mean", "OCR confidence"]];
const STAGES = ["lowres", "omni", "sft"]; // the shipped recipes (engine/recipes/)

// --- DOM and HTTP helpers --------------------------------------------------------------------

const $ = (selector) => document.querySelector(selector);

// h("a", {href: "#x", class: "chip", onclick: f}, "text", child...): an element; text is never HTML.
function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "value") node.value = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

const panel = (title, ...body) => h("div", { class: "panel" }, h("h3", {}, title), ...body);
const key = () => sessionStorage.getItem(KEY);

class Unauthorized extends Error {}

async function api(path, { method = "GET", json = undefined, body = undefined, type = undefined, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${key()}` };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (type) headers["Content-Type"] = type;
  const response = await fetch(path, { method, headers, body });
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    showLogin("The service refused this key.");
    throw new Unauthorized("unauthorized");
  }
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).error.message;
    } catch (e) { /* not our JSON error shape */ }
    throw new Error(`${response.status}: ${message}`);
  }
  return raw ? response : response.json();
}

// --- thumbnails: authenticated fetches, a few at a time, shown as blob URLs ---------------------

let generation = 0; // bumped at each page render: queued thumbnails of a page left behind are dropped
let blobUrls = [];
const queue = [];
let active = 0;

function thumb(sampleId, alt = "") {
  const img = h("img", { alt, "data-sample-id": sampleId, class: "thumb" });
  queue.push([generation, img]);
  setTimeout(pump, 0);
  return img;
}

function pump() {
  while (active < THUMB_PARALLEL && queue.length) {
    const [gen, img] = queue.shift();
    if (gen !== generation) continue;
    active += 1;
    api(`/v1/thumbnails/${img.dataset.sampleId}`, { raw: true })
      .then((r) => r.blob())
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        blobUrls.push(url);
        img.src = url;
        img.dataset.loaded = "1";
      })
      .catch(() => {
        img.alt = "no image";
        img.dataset.failed = "1";
      })
      .finally(() => {
        active -= 1;
        pump();
      });
  }
}

function cell(sampleId, caption, scores) {
  return h(
    "div",
    { class: "cell", "data-sample-id": sampleId, onclick: () => showSample(sampleId).catch(detailError), title: caption || "" },
    h("div", { class: "frame" }, thumb(sampleId)), // alt "": the caption is right below
    h("div", { class: "cap" }, caption || "(no caption)"),
    h("div", { class: "scores" }, scores),
  );
}

const cardScores = (s) =>
  `clip ${fmt(s.clip_score)} · nsfw ${fmt(s.nsfw_score)}` + (s.has_text ? " · text" : "") + ` · ${s.width}×${s.height}`;

// --- the sample detail panel ----------------------------------------------------------------

async function showSample(sampleId) {
  const body = $("#detail-body");
  $("#detail").hidden = false;
  body.replaceChildren(h("p", { class: "muted" }, "loading..."));
  const d = await api(`/v1/samples/${sampleId}`);
  const s = d.sample, g = d.signals || {}, dd = d.dedup;
  const rows = [
    ["clip score", fmt(g.clip_score)],
    ["NSFW", fmt(g.nsfw_score)],
    ["OCR text area", fmt(g.text_area_ratio)],
    ["OCR confidence", fmt(g.ocr_conf_mean)],
    ["watermark text", g.has_watermark_text === undefined ? "-" : String(g.has_watermark_text)],
    ["sharpness", fmt(g.blur)],
    ["size", `${g.width}×${g.height} ${g.image_format || ""} ${fmt(g.file_bytes)} B`],
    ["entropy", fmt(g.entropy)],
    ["caption language", g.caption_lang || "-"],
    ["warnings", (s.warnings || []).join(", ") || "-"],
  ];
  const community = dd
    ? h("p", {},
        dd.community_size > 1
          ? h("a", { href: `#explorer?community=${dd.community_id}` }, `near-duplicate community of ${dd.community_size}`)
          : "no near duplicate",
        dd.nearest_sim !== null ? ` (nearest image: cosine ${fmt(dd.nearest_sim)})` : "")
    : null;
  body.replaceChildren(
    thumb(sampleId, s.caption || ""),
    h("h3", {}, "caption"),
    h("p", { id: "detail-caption" }, s.caption || ""),
    h("h3", {}, "OCR text"),
    g.ocr_text ? h("pre", { class: "ocr", id: "detail-ocr" }, g.ocr_text) : h("p", { class: "muted" }, g.ocr_text === "" ? "no text found" : "OCR has not run"),
    h("h3", {}, "scores"),
    h("table", { id: "detail-scores" }, rows.map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v)))),
    community,
    h("h3", {}, "concepts"),
    h("div", { class: "chips" }, tagChips(d.tags)),
    h("p", {}, h("a", { href: `#search?sample=${sampleId}` }, "similar images")),
    h("p", { class: "muted" }, h("code", {}, sampleId), h("br"), s.uri || ""),
  );
}

// One chip per concept, its tag sources (caption, ocr, clip) in the tooltip.
function tagChips(tags) {
  if (!tags.length) return h("span", { class: "muted" }, "untagged");
  const sources = new Map();
  for (const t of tags) sources.set(t.synset, [...(sources.get(t.synset) || []), `${t.source} ${fmt(t.score)}`]);
  return [...sources].map(([synset, how]) => h("a", { class: "chip", href: `#concepts?c=${synset}`, title: how.join(", ") }, synset));
}

function detailError(e) {
  if (!(e instanceof Unauthorized)) $("#detail-body").replaceChildren(h("p", { class: "error" }, e.message));
}

function closeDetail() {
  $("#detail").hidden = true;
  $("#detail-body").replaceChildren();
}

// --- overview -------------------------------------------------------------------------------

async function overview() {
  const [stats, communities] = await Promise.all([api("/v1/stats"), api("/v1/communities?limit=10")]);
  const t = stats.totals;
  const card = (n, what) => h("div", { class: "card" }, h("div", { class: "n" }, fmt(n)), h("div", { class: "what" }, what));
  const histograms = Object.fromEntries(stats.score_histograms.map((x) => [x.score, x]));
  const filterable = new Set(RANGES.map(([c]) => c));
  return h(
    "div", {},
    h("div", { class: "cards", id: "totals" },
      card(t.samples, "samples"), card(t.ok, "usable"), card(t.rejected, "rejected"),
      card(t.distinct_images, "distinct images"),
      card(stats.image_duplicates.images, "images with several captions"),
      card(communities.communities, `near-duplicate communities (${communities.samples} samples)`)),
    h("div", { class: "panels" },
      HISTOGRAMS.filter(([c]) => histograms[c]).map(([c, label]) =>
        panel(`${label} · ${histograms[c].count}`,
          histogram(histograms[c], {
            onBar: filterable.has(c) ? (lo, hi) => { location.hash = `#explorer?${c}_min=${lo}&${c}_max=${hi}`; } : null,
          }))),
      panel("samples by source",
        h("table", {}, h("tr", {}, h("th", {}, "source"), h("th", {}, "kind"), h("th", { class: "num" }, "samples"), h("th", { class: "num" }, "usable")),
          stats.by_source.map((r) => h("tr", {}, h("td", {}, r.source), h("td", {}, r.source_kind), h("td", { class: "num" }, r.samples), h("td", { class: "num" }, r.ok))))),
      panel("reject reasons", bars(stats.reject_reasons.map((r) => ({ label: r.reject_reason, value: r.n })))),
      panel("warnings (usable samples)", bars(stats.warnings.map((r) => ({ label: r.warning, value: r.n })))),
      panel("largest near-duplicate communities",
        bars(communities.largest.map((c) => ({ label: c.community_id.slice(0, 10), value: c.n_samples, href: `#explorer?community=${c.community_id}` })))),
    ),
    h("p", { class: "muted" }, "Click a histogram bar to see its samples in the explorer."),
  );
}

// --- explorer -------------------------------------------------------------------------------

const EXPLORER_KEYS = [...RANGES.flatMap(([c]) => [`${c}_min`, `${c}_max`]), "concept", "has_text", "community", "near_duplicate", "caption", "sort", "offset"];

async function explorer(params) {
  const query = new URLSearchParams();
  for (const k of EXPLORER_KEYS) if (params.get(k)) query.set(k, params.get(k));
  query.set("limit", PAGE_SIZE);
  const input = (name, attrs = {}) => h("input", { name, value: params.get(name) || "", ...attrs });
  const select = (name, options) =>
    h("select", { name }, options.map(([v, label]) => h("option", { value: v, selected: (params.get(name) || "") === v }, label)));
  const form = h("form", { class: "filters", id: "filters", onsubmit: (e) => {
      e.preventDefault();
      const next = new URLSearchParams();
      for (const [k, v] of new FormData(e.target)) if (String(v).trim()) next.set(k, String(v).trim());
      location.hash = `#explorer?${next}`;
    } },
    RANGES.map(([c, label]) => h("label", {}, label, h("span", { class: "range" },
      input(`${c}_min`, { type: "number", step: "any", placeholder: "min" }),
      input(`${c}_max`, { type: "number", step: "any", placeholder: "max" })))),
    h("label", {}, "concept (and below)", input("concept", { placeholder: "dog.n.01" })),
    h("label", {}, "OCR text", select("has_text", [["", "any"], ["true", "has text"], ["false", "no text"]])),
    h("label", {}, "near duplicates", select("near_duplicate", [["", "any"], ["true", "in a community"], ["false", "unique"]])),
    h("label", {}, "community", input("community", { placeholder: "representative id", size: 12 })),
    h("label", {}, "caption contains", input("caption", { size: 12 })),
    h("label", {}, "sort", select("sort", [["", "sample id"], ...RANGES.flatMap(([c, l]) => [[`-${c}`, `${l} ↓`], [c, `${l} ↑`]])])),
    h("button", { type: "submit" }, "Apply"),
    h("button", { type: "button", class: "plain", onclick: () => { location.hash = "#explorer"; } }, "Clear"),
  );
  const page = await api(`/v1/samples?${query}`);
  const offset = page.offset;
  const go = (o) => { const next = new URLSearchParams(params); next.set("offset", Math.max(0, o)); location.hash = `#explorer?${next}`; };
  return h("div", {},
    form,
    h("div", { class: "status", id: "explorer-total", "data-total": page.total },
      `${page.total} samples` + (page.total ? ` · showing ${offset + 1}-${offset + page.samples.length}` : "")),
    h("div", { class: "grid", id: "grid" }, page.samples.map((s) => cell(s.sample_id, s.caption, cardScores(s)))),
    h("div", { class: "pager" },
      h("button", { type: "button", class: "plain", disabled: offset === 0, onclick: () => go(offset - PAGE_SIZE) }, "previous"),
      h("button", { type: "button", class: "plain", disabled: offset + PAGE_SIZE >= page.total, onclick: () => go(offset + PAGE_SIZE) }, "next")),
  );
}

// --- concepts -------------------------------------------------------------------------------

const chip = (c) => h("a", { class: "chip", href: `#concepts?c=${c.synset}`, title: c.gloss || "" }, c.synset, h("span", { class: "count" }, c.n_rollup));

function chipList(title, rows, max = 40) {
  return panel(`${title} · ${rows.length}`,
    h("div", { class: "chips" }, rows.slice(0, max).map(chip), rows.length > max ? h("span", { class: "muted" }, `+${rows.length - max} more`) : null,
      rows.length ? null : h("span", { class: "muted" }, "none")));
}

async function gapsPanel(params) {
  const depth = params.get("depth") || "6";
  const gaps = await api(`/v1/concepts/gaps?depth=${encodeURIComponent(depth)}&top=12`);
  const depthForm = h("form", { class: "row", onsubmit: (e) => {
      e.preventDefault();
      const next = new URLSearchParams(params);
      next.set("depth", new FormData(e.target).get("depth"));
      location.hash = `#concepts?${next}`;
    } },
    h("label", {}, "graph level ", h("input", { name: "depth", type: "number", min: 0, max: 30, value: depth })),
    h("button", { type: "submit", class: "plain" }, "compare"),
    h("span", { class: "muted" }, `${gaps.concepts} concepts at depth ${gaps.depth}; ratio = share of samples / uniform share`));
  const list = (rows) => bars(rows.map((r) => ({ label: r.synset, value: r.ratio, href: `#concepts?c=${r.synset}` })), { label: 170 });
  const table = (rows) => h("table", {}, h("tr", {}, h("th", {}, "concept"), h("th", { class: "num" }, "samples"), h("th", { class: "num" }, "ratio")),
    rows.map((r) => h("tr", {}, h("td", {}, h("a", { href: `#concepts?c=${r.synset}` }, r.synset)), h("td", { class: "num" }, r.n_rollup), h("td", { class: "num" }, fmt(r.ratio)))));
  return h("div", { class: "panels" },
    h("div", { class: "panel wide" }, h("h3", {}, "representation"), depthForm),
    panel("most over-represented", list(gaps.over)),
    panel("most under-represented", table(gaps.under)));
}

async function concepts(params) {
  const q = params.get("q") || "", c = params.get("c");
  const searchForm = h("form", { class: "row", id: "concept-search", onsubmit: (e) => {
      e.preventDefault();
      const term = new FormData(e.target).get("q").trim();
      if (term) location.hash = /\.[a-z]\.\d+$/.test(term) ? `#concepts?c=${term}` : `#concepts?q=${encodeURIComponent(term)}`;
    } },
    h("input", { name: "q", value: q || c || "", placeholder: "a concept: dog, vehicle, lorikeet.n.01", size: 36 }),
    h("button", { type: "submit" }, "Find"));
  const parts = [searchForm];
  if (c) {
    const [nb, samples] = await Promise.all([
      api(`/v1/concepts/${encodeURIComponent(c)}`),
      api(`/v1/samples?concept=${encodeURIComponent(c)}&limit=24`),
    ]);
    const me = nb.concept;
    parts.push(
      h("h2", { id: "concept-title" }, me.synset),
      h("p", {}, me.gloss || "", h("br"), h("span", { class: "muted" },
        `${(me.lemmas || []).join(", ")} · depth ${me.depth} · ${me.n_direct} tagged directly · ${me.n_rollup} with the concepts below it`)),
      h("div", { class: "panels" },
        chipList("parents", nb.parents), chipList("children", nb.children), chipList("siblings", nb.siblings),
        panel("children by samples", bars(nb.children.filter((x) => x.n_rollup > 0).slice(0, 15).map((x) => ({ label: x.synset, value: x.n_rollup, href: `#concepts?c=${x.synset}` })), { label: 170 }))),
      h("h3", {}, `samples in its subtree · ${samples.total} `, h("a", { href: `#explorer?concept=${encodeURIComponent(c)}` }, "open in the explorer")),
      h("div", { class: "grid", id: "concept-grid" }, samples.samples.map((s) => cell(s.sample_id, s.caption, cardScores(s)))),
    );
  } else if (q) {
    const found = await api(`/v1/concepts?q=${encodeURIComponent(q)}&limit=30`);
    parts.push(panel(`concepts matching "${q}" · ${found.length}`,
      found.length
        ? h("table", { id: "concept-results" }, h("tr", {}, h("th", {}, "concept"), h("th", { class: "num" }, "depth"), h("th", { class: "num" }, "tagged"), h("th", { class: "num" }, "with subtree")),
            found.map((r) => h("tr", {}, h("td", {}, h("a", { href: `#concepts?c=${r.synset}` }, r.synset)), h("td", { class: "num" }, r.depth), h("td", { class: "num" }, r.n_direct), h("td", { class: "num" }, r.n_rollup))))
        : h("p", { class: "muted" }, "no concept matches")));
  }
  parts.push(await gapsPanel(params));
  return h("div", {}, parts);
}

// --- search ---------------------------------------------------------------------------------

function hitsGrid(result) {
  return h("div", {},
    h("div", { class: "status", id: "search-count", "data-hits": result.hits.length }, `${result.hits.length} results`),
    h("p", { class: "muted", id: "search-model" }, result.model_id ? `embedding model: ${result.model_id}` : ""),
    h("div", { class: "grid", id: "search-grid" }, result.hits.map((x) => cell(x.sample_id, x.caption, `#${x.rank} · similarity ${fmt(x.score)}`))));
}

async function search(params) {
  const text = params.get("text") || "", sample = params.get("sample");
  const results = h("div", { id: "search-results" });
  const imageSearch = async (blob, what) => {
    results.replaceChildren(h("p", { class: "muted" }, `searching with ${what}...`));
    try {
      results.replaceChildren(hitsGrid(await api("/v1/search?k=24", { method: "POST", body: blob, type: blob.type || "application/octet-stream" })));
    } catch (e) {
      results.replaceChildren(h("p", { class: "error" }, e.message));
    }
  };
  const form = h("form", { class: "row", id: "text-search", onsubmit: (e) => {
      e.preventDefault();
      const t = new FormData(e.target).get("text").trim();
      if (t) location.hash = `#search?text=${encodeURIComponent(t)}`;
    } },
    h("input", { name: "text", value: text, placeholder: "a text query: a red car, a smiling sun", size: 40 }),
    h("button", { type: "submit" }, "Search images"),
    h("span", { class: "muted" }, "or an image:"),
    h("input", { type: "file", id: "image-query", accept: "image/*", onchange: (e) => {
      const file = e.target.files[0];
      if (file) imageSearch(file, file.name);
    } }));
  if (text) results.replaceChildren(hitsGrid(await api(`/v1/search?k=24&text=${encodeURIComponent(text)}`)));
  else if (sample) {
    const blob = await (await api(`/v1/thumbnails/${sample}`, { raw: true })).blob();
    await imageSearch(blob, "a sample's image");
  }
  return h("div", {}, form, results);
}

// --- manifests ------------------------------------------------------------------------------

function manifestDetail(m, weights) {
  const s = m.sidecar, counts = s.counts, marginal = s.concept_marginal || {};
  const before = marginal.before || { top: [] }, after = marginal.after || { top: [] };
  const ids = [...new Set([...before.top, ...after.top].map((x) => x.concept_id))];
  const name = Object.fromEntries([...before.top, ...after.top].map((x) => [x.concept_id, x.name]));
  const share = (list, id) => { const x = list.find((y) => y.concept_id === id); return x ? x.share : null; };
  const pairs = ids.map((id) => ({ label: name[id], a: share(before.top, id), b: share(after.top, id) }))
    .sort((x, y) => (y.a ?? 0) - (x.a ?? 0));
  const stat = (k) => h("tr", {}, h("td", {}, k), h("td", { class: "num" }, fmt(before[k])), h("td", { class: "num" }, fmt(after[k])));
  const w = s.weights || {};
  return h("div", { id: "manifest-detail" },
    h("h2", {}, `${m.stage} · ${m.id}`),
    h("p", { class: "muted" }, `seed ${s.seed} · ${s.size ? `${s.size} draws` : "one row per sample"} · ${counts.rows} rows from a pool of ${counts.pool} · engine ${s.engine_version}`),
    h("div", { class: "panels" },
      panel(`row weights · min ${fmt(w.min)} · median ${fmt(w.p50)} · max ${fmt(w.max)}`, histogram(weights)),
      panel("concept marginal: top shares before and after balancing",
        paired(pairs, { names: ["before", "after"] }),
        h("table", {}, h("tr", {}, h("th", {}, ""), h("th", { class: "num" }, "before"), h("th", { class: "num" }, "after")),
          ["concepts", "normalized_entropy", "gini"].map(stat))),
      panel("samples removed, per step",
        bars([...counts.filters.map((f) => ({ label: f.filter, value: f.removed })),
          { label: "dedup", value: counts.dedup_removed }, { label: "balancing", value: counts.balance_dropped },
          { label: "zero weight", value: counts.zero_weight }], { label: 140 }),
        h("p", { class: "muted" }, `pool ${counts.pool} → ${counts.rows} rows (${counts.t2i} text-to-image, ${counts.i2i} image-to-image)`)),
      panel("buckets",
        h("table", { id: "bucket-table" }, h("tr", {}, h("th", {}, "h × w"), h("th", { class: "num" }, "rows"), h("th", { class: "num" }, "weight share")),
          s.buckets.map((b) => h("tr", {}, h("td", {}, `${b.h} × ${b.w}`), h("td", { class: "num" }, b.rows), h("td", { class: "num" }, fmt(b.weight_share)))))),
    ));
}

async function manifests(params) {
  const id = params.get("id");
  const note = h("span", { id: "request-status", class: "muted" });
  const form = h("form", { class: "row", id: "manifest-request", onsubmit: async (e) => {
      e.preventDefault();
      const f = new FormData(e.target);
      const body = { stage: f.get("stage"), seed: Number(f.get("seed") || 0) };
      if (f.get("size")) body.size = Number(f.get("size"));
      note.textContent = "requesting...";
      try {
        const m = await api("/v1/manifests", { method: "POST", json: body });
        location.hash = `#manifests?id=${m.id}`;
      } catch (err) {
        note.textContent = err.message;
        note.className = "error";
      }
    } },
    h("strong", {}, "New manifest:"),
    h("label", {}, "stage ", h("select", { name: "stage" }, STAGES.map((s) => h("option", { value: s }, s)))),
    h("label", {}, "seed ", h("input", { name: "seed", type: "number", min: 0, value: 0 })),
    h("label", {}, "draws ", h("input", { name: "size", type: "number", min: 1, placeholder: "all" })),
    h("button", { type: "submit" }, "Build"), note);
  const list = await api("/v1/manifests");
  const table = h("table", { id: "manifest-list" },
    h("tr", {}, ["id", "stage", "status", "rows", "seed", "draws"].map((x) => h("th", {}, x))),
    list.map((m) => h("tr", { class: `clickable${m.id === id ? " selected" : ""}`, onclick: () => { location.hash = `#manifests?id=${m.id}`; } },
      h("td", {}, h("code", {}, m.id)), h("td", {}, m.stage), h("td", {}, m.status), h("td", { class: "num" }, m.rows ?? ""),
      h("td", { class: "num" }, m.seed ?? ""), h("td", { class: "num" }, m.size ?? "all"))));
  const parts = [form, panel(`manifests · ${list.length}`, list.length ? table : h("p", { class: "muted" }, "none yet"))];
  if (id) {
    const m = await api(`/v1/manifests/${id}`);
    if (m.status === "ready") parts.push(manifestDetail(m, await api(`/v1/manifests/${id}/weights`)));
    else {
      parts.push(h("p", { id: "manifest-state", class: m.status === "failed" ? "error" : "muted" }, `${m.stage} ${m.id}: ${m.status} ${m.error || ""}`));
      if (m.status === "pending" || m.status === "running") {
        const here = location.hash;
        setTimeout(() => { if (location.hash === here) route(); }, 1000);
      }
    }
  }
  return h("div", {}, parts);
}

// --- navigation -----------------------------------------------------------------------------

const PAGES = { overview, explorer, concepts, search, manifests };
let routing = 0;

function showLogin(message = "") {
  $("#login").hidden = false;
  $("#forget").hidden = true;
  $("#page").replaceChildren();
  $("#key-error").textContent = message;
  closeDetail();
}

async function route() {
  if (!key()) {
    showLogin();
    return;
  }
  $("#login").hidden = true;
  $("#forget").hidden = false;
  const [name0, query = ""] = location.hash.slice(1).split("?");
  const name = PAGES[name0] ? name0 : "overview";
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  generation += 1;
  blobUrls.forEach((u) => URL.revokeObjectURL(u));
  blobUrls = [];
  closeDetail();
  const page = $("#page"), mine = ++routing;
  delete page.dataset.ready;
  page.replaceChildren(h("p", { class: "muted" }, "loading..."));
  let content;
  try {
    content = await PAGES[name](new URLSearchParams(query));
  } catch (e) {
    if (e instanceof Unauthorized) return;
    content = h("p", { class: "error", id: "page-error" }, e.message);
  }
  if (mine !== routing) return; // a newer navigation won
  page.replaceChildren(content);
  page.dataset.ready = name;
}

$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("#key").value.trim();
  if (!value) return;
  sessionStorage.setItem(KEY, value);
  $("#key").value = "";
  route();
});
$("#forget").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  showLogin();
});
$("#detail-close").addEventListener("click", closeDetail);
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeDetail(); });
window.addEventListener("hashchange", route);
route();
