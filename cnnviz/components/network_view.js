// cnnviz's network view (a Streamlit Components v2 component, mounted by cnnviz/components/network_view.py).
// Every layer of one pass as a column of feature maps, drawn here from the uint8 maps the page sends once per input
// (cnnviz/render/network_data.py): the selected column expanded, the others small, each with its colour bar.
// Clicks, steps and Play happen here at once; each is sent to Python as the "event" trigger, so the page's inspector,
// slider state and URL follow. Play moves the highlight from column to column in the browser (a CSS transition),
// lighting the link it crosses (in the backward pass the link's thickness is the size of the gradient it carries).
// Hovering a cell outlines its receptive field (the payload's "geometry") on the input picture and earlier columns.
const views = new WeakMap();  // parentElement -> view, kept across reruns
const payloads = new Map();   // payload key -> {meta, bytes}: the maps the page sent, kept while the page lives
const KEEP = 4;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function button(text, label, cls) {
  const b = el("button", `cnnviz-button ${cls || ""}`, text);
  b.type = "button";
  b.title = label;
  b.setAttribute("aria-label", label);
  return b;
}

async function inflate(b64) {
  const text = atob(b64);
  const bin = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bin[i] = text.charCodeAt(i);
  const stream = new Blob([bin]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function remember(key, entry) {
  payloads.delete(key);
  payloads.set(key, entry);
  while (payloads.size > KEEP) payloads.delete(payloads.keys().next().value);
}

function setup(root) {
  const v = { root, seq: 0, sel: 0, ch: null, cell: null, playing: false, timer: null, cols: [], links: [],
              entry: null, key: null, data: null, send: () => {}, drawn: null, pic: null, lit: null };
  v.wrap = el("div", "nv-view");
  v.head = el("div", "nv-head");
  v.title = el("span", "nv-title");
  v.prev = button("\u2039 Prev", "Previous layer", "nv-step");
  v.play = button("\u25B6 Play", "Play: walk through the layers", "nv-play");
  v.next = button("Next \u203A", "Next layer", "nv-step");
  v.speed = el("select", "nv-speed");
  v.speed.title = "Play speed";
  v.speed.setAttribute("aria-label", "Play speed");
  v.pos = el("span", "nv-pos");
  v.pos.setAttribute("role", "status");
  v.hover = el("span", "nv-hover");
  v.head.append(v.title, v.prev, v.play, v.next, v.speed, v.pos, v.hover);
  v.body = el("div", "nv-body");
  v.track = el("div", "nv-track");
  v.glow = el("div", "nv-glow");
  v.track.append(v.glow);
  v.body.append(v.track);
  v.wrap.append(v.head, v.body);
  root.append(v.wrap);
  v.prev.addEventListener("click", () => { stop(v); go(v, v.sel - 1, "step"); });
  v.next.addEventListener("click", () => { stop(v); go(v, v.sel + 1, "step"); });
  v.play.addEventListener("click", () => (v.playing ? stop(v, true) : start(v)));
  window.addEventListener("resize", () => { if (v.entry) layout(v); });
  let width = 0;  // the page can settle after the first layout (its scroll bar, the fonts): lay out again
  new ResizeObserver(() => {
    if (v.entry && root.clientWidth !== width) { width = root.clientWidth; layout(v); }
  }).observe(root);
  if (document.fonts) document.fonts.ready.then(() => { if (v.entry) layout(v); });
  return v;
}

// ------------------------------------------------------------------------------------------------ colours, sizes

function lut(v, c) {  // 256 RGBA colours for the column's q levels, on its own or the shared scale
  const pal = c.signed || v.data.shared_scale ? v.data.palettes.signed : v.data.palettes.unsigned;
  const out = new Uint8ClampedArray(256 * 4);
  const [slo, shi] = v.entry.meta.shared;
  for (let q = 0; q < 256; q++) {
    let t = q / 255;
    if (v.data.shared_scale) {
      const value = c.lo + (q * (c.hi - c.lo)) / 255;
      t = shi > slo ? (value - slo) / (shi - slo) : 0.5;
    }
    const i = Math.max(0, Math.min(255, Math.round(t * 255)));
    out.set([pal[3 * i], pal[3 * i + 1], pal[3 * i + 2], 255], 4 * q);
  }
  return out;
}

function paint(cv, colours, bytes, start, count) {  // q levels -> colours, one 32-bit pixel per value
  const img = cv.getContext("2d").createImageData(cv.width, cv.height);
  const px = new Uint32Array(img.data.buffer), lut32 = new Uint32Array(colours.buffer);
  for (let k = 0; k < count; k++) px[k] = lut32[bytes[start + k]];
  cv.getContext("2d").putImageData(img, 0, 0);
}

function sprite(colours, bytes, start, n, h, w) {  // n maps of h x w side by side, as a PNG data URL
  const cv = document.createElement("canvas");
  cv.width = n * w;
  cv.height = h;
  const img = cv.getContext("2d").createImageData(n * w, h);
  const px = new Uint32Array(img.data.buffer), lut32 = new Uint32Array(colours.buffer);
  for (let ch = 0; ch < n; ch++) {
    for (let y = 0; y < h; y++) {
      const from = start + (ch * h + y) * w, to = y * n * w + ch * w;
      for (let x = 0; x < w; x++) px[to + x] = lut32[bytes[from + x]];
    }
  }
  cv.getContext("2d").putImageData(img, 0, 0);
  return cv.toDataURL("image/png");
}

function grid(target, c) {  // a clicked or hovered map's rows and columns
  return target.dataset.vector ? [target.height, target.width] : [c.shape[1], c.shape[2]];
}

function isMaps(c) {
  return c.shape.length === 3 && c.shape[1] * c.shape[2] > 1;
}

function mapPx(v, c, selected) {  // screen px of one map's side: >= 28 (>= 1 px per map pixel), x3 when selected
  const h = Math.max(c.shape[1], c.shape[2]);
  const base = Math.max(h, 28);
  return Math.round((selected ? Math.max(3 * h, 2 * base) : base) * v.data.scale);
}

// ------------------------------------------------------------------------------------------------------ drawing

function build(v) {  // every column once per payload: text, and its maps as one picture (a sprite) at native
  // resolution, shown by one light element per map (its background, scaled without smoothing): a canvas per map
  // cost about 0.25 ms each, 0.9 s for CIFAR-10's 3,400 maps on a busy machine
  v.track.replaceChildren(v.glow);
  v.lit = null;
  v.pic = picture(v);
  if (v.pic) v.track.append(v.pic.el);
  const sprites = [];  // one style rule per column: a custom property holding the picture is parsed per element
  v.cols = [];
  v.links = [];
  const meta = v.entry.meta;
  const norms = meta.columns.map((c) => c.norm).filter((n) => n > 0);
  const lmin = Math.log10(Math.min(...norms, 1e300)), lmax = Math.log10(Math.max(...norms, 1e-300));
  meta.columns.forEach((c, i) => {
    if (i > 0) {
      const link = el("div", "nv-link");
      const line = el("div", "nv-line");
      let px = 2;
      if (meta.pass === "backward") {
        px = c.norm > 0 ? 2 + Math.round((10 * (Math.log10(c.norm) - lmin)) / Math.max(lmax - lmin, 1e-9)) : 1;
        link.title = `gradient passed on: size ${c.norm.toPrecision(3)}`;
      }
      line.style.height = `${px}px`;
      link.dataset.thickness = String(px);
      link.append(line);
      v.track.append(link);
      v.links.push(link);
    }
    const col = el("div", "nv-col");
    col.dataset.col = String(i);
    const shape = c.shape.join("\u00D7");
    const name = el("div", "nv-name", `${i + 1}. ${c.name}`);
    const kind = el("div", "nv-kind", `${c.kind} \u00B7 ${shape}`);
    name.title = name.textContent;
    kind.title = kind.textContent;
    const maps = el("div", "nv-maps");
    const colours = lut(v, c);
    const mapEls = [];
    if (isMaps(c)) {
      const [n, h, w] = c.shape;
      sprites.push(`.nv-col[data-col="${i}"] .nv-map{background-image:url(${sprite(colours, v.entry.bytes, c.offset, n, h, w)})}`);
      maps.style.setProperty("--n", String(n));
      for (let ch = 0; ch < n; ch++) {
        const m = el("div", "nv-map");
        m.dataset.ch = String(ch);
        m.style.setProperty("--ch", String(ch));
        maps.append(m);
        mapEls.push(m);
      }
    } else {
      const k = c.size;
      const labels = k === (meta.classes || []).length ? meta.classes : null;
      if (k <= 16) {
        const vmax = Math.max(...(c.exact || [0]).map(Math.abs), 1e-30);
        for (let u = 0; u < k; u++) {
          const row = el("div", "nv-unit");
          row.dataset.ch = String(u);
          const bar = el("span", "nv-ubar");
          bar.style.width = `${Math.round((40 * Math.abs(c.exact[u])) / vmax) * v.data.scale}px`;
          bar.classList.add(c.exact[u] < 0 ? "neg" : "pos");
          row.append(el("span", "nv-ulab", labels ? labels[u] : String(u)), bar, el("span", "nv-uval", c.exact_text[u]));
          maps.append(row);
          mapEls.push(row);
        }
        maps.classList.add("nv-units");
      } else {  // a long vector: one cell per unit, wrapped into a picture
        const cv = el("canvas", "nv-map nv-vec");
        const cw = Math.ceil(Math.sqrt(k)), chh = Math.ceil(k / cw);
        cv.width = cw;
        cv.height = chh;
        cv.dataset.ch = "0";
        cv.dataset.vector = String(k);
        paint(cv, colours, v.entry.bytes, c.offset, k);
        maps.append(cv);
        mapEls.push(cv);
      }
    }
    const ramp = el("div", "nv-ramp");
    const signed = c.signed || v.data.shared_scale;
    ramp.style.background = signed ? "linear-gradient(90deg, #053061, #4393c3, #f7f7f7, #d6604d, #67001f)"
      : "linear-gradient(90deg, #440154, #3e4a89, #26828e, #35b779, #fde725)";
    const [lo, hi] = v.data.shared_scale ? meta.shared_range : c.range;
    const range = el("div", "nv-range");  // lo, the colour bar, hi: on one line (room for the maps)
    range.append(el("span", "", lo), ramp, el("span", "", hi));
    range.title = v.data.shared_scale ? "one colour scale for every layer" : "this layer's colour scale";
    col.append(name, kind, maps, range);
    v.track.append(col);
    v.cols.push({ el: col, maps, mapEls, meta: c });
    col.addEventListener("click", (e) => click(v, i, e));
    maps.addEventListener("mousemove", (e) => hover(v, i, e));
    maps.addEventListener("mouseleave", () => unhover(v));
  });
  const style = el("style");
  style.textContent = sprites.join("\n");
  v.track.append(style);
}

function picture(v) {  // the network's input at the left: not a layer (no click), its receptive fields outlined
  const inp = v.entry.meta.input;
  if (!inp) return null;
  const [n, h, w] = inp.shape;
  const box = el("div", "nv-pic");
  box.append(el("div", "nv-picname", "input"), el("div", "nv-pickind", `picture \u00B7 ${inp.shape.join("\u00D7")}`));
  const frame = el("div", "nv-picframe");
  const cv = el("canvas", "nv-piccv");
  cv.width = w;
  cv.height = h;
  const img = cv.getContext("2d").createImageData(w, h);
  const bytes = v.entry.bytes, step = (inp.hi - inp.lo) / 255;
  for (let k = 0; k < h * w; k++) {
    for (let c = 0; c < 3; c++) {
      const ch = n >= 3 ? c : 0, q = bytes[inp.offset + ch * h * w + k];
      const colour = inp.mean && inp.std && inp.mean.length === n  // the picture's own colours
        ? 255 * Math.max(0, Math.min(1, (inp.lo + q * step) * inp.std[ch] + inp.mean[ch])) : q;
      img.data[4 * k + c] = colour;
    }
    img.data[4 * k + 3] = 255;
  }
  cv.getContext("2d").putImageData(img, 0, 0);
  frame.append(cv);
  box.append(frame);
  frame.addEventListener("mousemove", (e) => {
    const r = cv.getBoundingClientRect();
    const y = Math.min(h - 1, Math.floor(((e.clientY - r.top) / r.height) * h));
    const x = Math.min(w - 1, Math.floor(((e.clientX - r.left) / r.width) * w));
    const values = [];
    for (let c = 0; c < n; c++) values.push(Number((inp.lo + bytes[inp.offset + (c * h + y) * w + x] * step).toPrecision(3)));
    v.hover.textContent = `input pixel (${y}, ${x}) \u2248 ${values.join(", ")} (normalised)`;
  });
  frame.addEventListener("mouseleave", () => unhover(v));
  return { el: box, frame, cv, shape: inp.shape };
}

function span(spec, i, n) {  // [first, last] index read along one axis: [jump, pad, extent] or [lo list, hi list]
  if (Array.isArray(spec[0])) return [spec[0][i], spec[1][i]];
  const start = i * spec[0] - spec[1];
  return [Math.max(0, start), Math.min(n - 1, start + spec[2] - 1)];
}

function field(v, space, cell, earlier) {  // [[c0, c1], [y0, y1], [x0, x1]] of space ``earlier``, or null
  const geo = v.entry.geo;
  const row = geo && space < geo.fields.length ? geo.fields[space] : null;
  const spec = row ? row[earlier] : null;
  if (!spec) return null;
  return spec.map((axis, k) => span(axis, cell[k], geo.grids[earlier][k]));
}

function frameBox(parent, [[y0, y1], [x0, x1]], h, w) {  // an outline over rows y0..y1, columns x0..x1 of a map
  const b = el("div", "nv-rf");
  b.style.left = `${(100 * x0) / w}%`;
  b.style.top = `${(100 * y0) / h}%`;
  b.style.width = `${(100 * (x1 - x0 + 1)) / w}%`;
  b.style.height = `${(100 * (y1 - y0 + 1)) / h}%`;
  parent.append(b);
}

function unlight(v) {
  for (const old of v.track.querySelectorAll(".nv-rf, .nv-rfvec")) old.remove();
  for (const old of v.track.querySelectorAll(".nv-rf-unit")) old.classList.remove("nv-rf-unit");
  v.lit = null;
}

function unhover(v) {
  v.hover.textContent = "";
  v.hover.title = "";
  unlight(v);
}

function light(v, i, cell) {  // outline what cell (channel, row, column) of column i depends on; its text
  const key = `${i}|${cell}`;
  if (v.lit === key) return v.litText;
  unlight(v);
  v.lit = key;
  const space = v.cols[i].meta.space;
  const geo = v.entry.geo;
  v.litText = "";
  v.litNote = "";
  if (!geo || space === null || space === undefined) return "";
  const inPic = field(v, space, cell, 0);
  if (v.pic && inPic) frameBox(v.pic.frame, inPic.slice(1), v.pic.shape[1], v.pic.shape[2]);
  v.cols.forEach((col, k) => {
    const t = col.meta.space;
    if (t === null || t === undefined || t >= space) return;
    const f = field(v, space, cell, t);
    if (!f) return;
    const [[c0, c1], rows, cols] = f;
    if (isMaps(col.meta)) {
      const [, h, w] = col.meta.shape;
      for (let ch = c0; ch <= c1; ch++) frameBox(col.mapEls[ch], [rows, cols], h, w);
      return;
    }
    const [, gh, gw] = geo.grids[t];
    const inside = (u) => {
      const c = Math.floor(u / (gh * gw)), y = Math.floor(u / gw) % gh, x = u % gw;
      return c >= c0 && c <= c1 && y >= rows[0] && y <= rows[1] && x >= cols[0] && x <= cols[1];
    };
    const cv = col.mapEls[0];
    if (cv && cv.dataset.vector) {  // a long vector: its cells tinted on a canvas over it
      const over = el("canvas", "nv-rfvec");
      over.width = cv.width;
      over.height = cv.height;
      Object.assign(over.style, { left: `${cv.offsetLeft}px`, top: `${cv.offsetTop}px`, width: cv.style.width,
                                  height: cv.style.height });
      const g = over.getContext("2d");
      g.fillStyle = "rgba(255, 140, 0, 0.55)";
      for (let u = 0; u < col.meta.size; u++) if (inside(u)) g.fillRect(u % cv.width, Math.floor(u / cv.width), 1, 1);
      col.maps.append(over);
      return;
    }
    col.mapEls.forEach((row, u) => { if (inside(u)) row.classList.add("nv-rf-unit"); });
  });
  if (inPic) {
    const [, [y0, y1], [x0, x1]] = inPic, [, h, w] = v.pic ? v.pic.shape : geo.grids[0];
    const sees = y0 === 0 && x0 === 0 && y1 === h - 1 && x1 === w - 1 ? "the whole input"
      : `input rows ${y0}\u2013${y1}, columns ${x0}\u2013${x1}`;
    v.litText = v.entry.meta.pass === "backward" ? ` \u00B7 in the forward pass it sees ${sees}`
      : ` \u00B7 sees ${sees}`;
    v.litNote = v.entry.meta.pass === "backward"
      ? "Outlined: the input pixels and earlier layers' cells that this position's activation depends on in the "
        + "forward pass (its receptive field), on the picture and the columns nearer the pixels; the gradient here "
        + "is passed back to exactly these cells."
      : "Outlined: the input pixels and earlier layers' cells this cell depends on (its receptive field).";
  }
  return v.litText;
}

function chrome(v) {  // the height of a column without its maps, and of the header
  const col = v.cols[0].el;
  return col.offsetHeight - v.cols[0].maps.offsetHeight;
}

function layout(v) {  // sizes every column's maps to fit the height budget (60% of the window), selected expanded
  const budget = Math.floor(0.6 * window.innerHeight);
  const fit = (room) => {
    if (v.pic) {  // >= 3 screen px per pixel, as the selected column's maps
      const [, h, w] = v.pic.shape, side = Math.min(room, Math.round(Math.max(3 * Math.max(h, w), 84) * v.data.scale));
      v.pic.cv.style.width = `${Math.round((side * w) / Math.max(h, w))}px`;
      v.pic.cv.style.height = `${Math.round((side * h) / Math.max(h, w))}px`;
    }
    v.cols.forEach((col, i) => size(v, col, i === v.sel, room));
    return budget - (v.wrap.offsetHeight - Math.max(...v.cols.map((c) => c.maps.offsetHeight)));
  };
  // first a guess (header, a column's text and colour bar, the padding and scroll bar), then the measured room
  const guess = budget - v.head.offsetHeight - chrome(v) - 40;
  let room = fit(guess);
  if (room !== guess) room = fit(room);
  for (let k = 0, r = room; k < 8 && v.wrap.offsetHeight > budget && r > 28; k += 1) {  // rows round up: less room
    r = Math.max(28, r - Math.max(v.wrap.offsetHeight - budget, 10));
    fit(r);
  }
  mark(v);
}

function size(v, col, selected, room) {
  const c = col.meta;
  col.el.classList.toggle("nv-selected", selected);
  if (!isMaps(c)) {
    if (col.mapEls[0] && col.mapEls[0].dataset.vector) {
      const cv = col.mapEls[0];
      const cell = Math.max(Math.floor(Math.min(room, (selected ? 3 : 1.5) * 84 * v.data.scale) / cv.height), 2);
      cv.style.width = `${cell * cv.width}px`;
      cv.style.height = `${cell * cv.height}px`;
    }
    return;
  }
  const [n, h, w] = c.shape;
  const px = mapPx(v, c, selected);
  const gap = selected ? 3 : 2;
  let rows = Math.max(1, Math.min(n, Math.floor((room + gap) / (px * (h / Math.max(h, w)) + gap))));
  const across = Math.ceil(n / rows);
  rows = Math.ceil(n / across);
  const pw = Math.round((px * w) / Math.max(h, w)), ph = Math.round((px * h) / Math.max(h, w));
  col.maps.style.gridTemplateColumns = `repeat(${across}, ${pw}px)`;
  col.maps.style.gap = `${gap}px`;
  col.maps.style.setProperty("--pw", `${pw}px`);
  col.maps.style.setProperty("--ph", `${ph}px`);
}

function mark(v) {  // the selected channel and cell, the glow box on the selected column, the lit links
  v.cols.forEach((col, i) => {
    col.mapEls.forEach((m, ch) => m.classList.toggle("nv-chosen", i === v.sel && v.ch === ch));
  });
  for (const old of v.track.querySelectorAll(".nv-cell")) old.remove();
  const col = v.cols[v.sel];
  if (!col) return;
  if (v.cell && v.ch !== null && col.mapEls[v.ch] && isMaps(col.meta)) {
    const cv = col.mapEls[v.ch];
    const [, h, w] = col.meta.shape;
    const box = el("div", "nv-cell");
    const sx = cv.offsetWidth / w, sy = cv.offsetHeight / h;
    box.style.left = `${cv.offsetLeft + v.cell[1] * sx - 1}px`;
    box.style.top = `${cv.offsetTop + v.cell[0] * sy - 1}px`;
    box.style.width = `${sx + 2}px`;
    box.style.height = `${sy + 2}px`;
    col.maps.append(box);
  }
  v.links.forEach((link, k) => {
    link.classList.toggle("nv-passed", k < v.sel);
    link.classList.toggle("nv-lit", k === v.sel - 1);
  });
  const g = v.glow.style;
  g.left = `${col.el.offsetLeft - 4}px`;
  g.top = `${col.el.offsetTop - 4}px`;
  g.width = `${col.el.offsetWidth + 8}px`;
  g.height = `${col.el.offsetHeight + 8}px`;
  const n = v.cols.length;
  v.pos.textContent = `${v.sel + 1} / ${n}: ${col.meta.name}`;
  v.prev.disabled = v.sel <= 0;
  v.next.disabled = v.sel >= n - 1;
  // keep the selected column in view: only the view scrolls sideways, never the page
  const left = col.el.offsetLeft, right = left + col.el.offsetWidth;
  if (left < v.body.scrollLeft + 8 || right > v.body.scrollLeft + v.body.clientWidth - 8) {
    const to = Math.max(0, left - Math.max(8, (v.body.clientWidth - col.el.offsetWidth) / 2));
    const glide = v.playing && Number(v.speed.value) >= 1;  // a smooth scroll needs longer than a fast step
    v.body.scrollTo({ left: to, behavior: glide ? "smooth" : "auto" });
  }
}

// ------------------------------------------------------------------------------------------------------- events

function emit(v, event) {
  v.seq += 1;
  v.send({ ...event, seq: v.seq, have: v.key });
}

function go(v, i, kind) {
  if (!v.entry) return;
  const n = v.cols.length;
  if (i < 0 || i >= n) return;
  if (i !== v.sel) {
    v.sel = i;
    v.ch = null;
    v.cell = null;
    layout(v);
  }
  emit(v, { kind, layer: i });
}

function click(v, i, e) {
  const target = e.target.closest("[data-ch]");
  if (!target) {
    if (i !== v.sel) { stop(v); go(v, i, "layer"); }
    return;
  }
  stop(v);
  const ch = Number(target.dataset.ch);
  let cell = null;
  if (i === v.sel && target.classList.contains("nv-map")) {
    const r = target.getBoundingClientRect(), [gh, gw] = grid(target, v.cols[i].meta);
    const row = Math.min(gh - 1, Math.floor(((e.clientY - r.top) / r.height) * gh));
    const c = Math.min(gw - 1, Math.floor(((e.clientX - r.left) / r.width) * gw));
    if (target.dataset.vector) {
      const unit = row * gw + c;
      if (unit >= Number(target.dataset.vector)) return;
      v.sel = i; v.ch = unit; v.cell = null;
      layout(v);
      emit(v, { kind: "channel", layer: i, channel: unit });
      return;
    }
    cell = [row, c];
  }
  const moved = i !== v.sel;
  v.sel = i;
  v.ch = ch;
  v.cell = cell;
  if (moved) layout(v); else mark(v);
  emit(v, cell ? { kind: "cell", layer: i, channel: ch, row: cell[0], col: cell[1] }
    : { kind: "channel", layer: i, channel: ch });
}

function hover(v, i, e) {
  const target = e.target.closest(".nv-map, .nv-unit");
  if (!target) return;
  const c = v.cols[i].meta;
  let index, where;
  if (target.classList.contains("nv-unit")) {
    index = Number(target.dataset.ch);
    where = `unit ${index}`;
  } else {
    const r = target.getBoundingClientRect(), [gh, gw] = grid(target, c);
    const row = Math.min(gh - 1, Math.floor(((e.clientY - r.top) / r.height) * gh));
    const col = Math.min(gw - 1, Math.floor(((e.clientX - r.left) / r.width) * gw));
    if (target.dataset.vector) {
      const unit = row * gw + col;
      if (unit >= c.size) { unhover(v); return; }
      index = unit;
      where = `unit ${unit}`;
    } else {
      const ch = Number(target.dataset.ch), [, h, w] = c.shape;
      index = ch * h * w + row * w + col;
      where = `channel ${ch} (${row}, ${col})`;
    }
  }
  const value = c.lo + (v.entry.bytes[c.offset + index] * (c.hi - c.lo)) / 255;
  let sees = "";
  const geo = v.entry.geo, g = geo && c.space !== null && c.space !== undefined ? geo.grids[c.space] : null;
  if (g && g[0] * g[1] * g[2] === c.size) {  // the cell's place in its space: a vector's unit keeps its map cell's
    sees = light(v, i, [Math.floor(index / (g[1] * g[2])), Math.floor(index / g[2]) % g[1], index % g[2]]);
  }
  v.hover.textContent = `${c.name} ${where} \u2248 ${Number(value.toPrecision(3))}${sees}`;
  v.hover.title = sees ? `${v.hover.textContent}\n${v.litNote}` : v.hover.textContent;  // in full, if cut
}

function start(v) {
  if (!v.entry) return;
  v.playing = true;
  v.play.textContent = "Pause";
  v.play.title = "Pause";
  if (v.sel >= v.cols.length - 1) { v.sel = -1; }
  tick(v);
}

function stop(v, send) {
  if (!v.playing) return;
  v.playing = false;
  clearTimeout(v.timer);
  v.play.textContent = "\u25B6 Play";
  v.play.title = "Play: walk through the layers";
  v.wrap.classList.remove("nv-playing");
  if (send) emit(v, { kind: "pause", layer: v.sel });
}

function tick(v) {
  if (!v.playing) return;
  const seconds = Number(v.speed.value) || 1;
  v.wrap.style.setProperty("--glide", `${Math.min(0.8 * seconds, 0.7)}s`);
  v.wrap.classList.add("nv-playing");
  go(v, v.sel + 1, "step");
  if (v.sel >= v.cols.length - 1) { stop(v); return; }
  v.timer = setTimeout(() => tick(v), seconds * 1000);
}

// --------------------------------------------------------------------------------------------------- the mount

function configure(v, data) {
  v.data = data;
  v.wrap.style.setProperty("--label-px", `${data.label_px}px`);
  v.title.textContent = data.title;
  if (!v.speed.options.length) {
    for (const [name, seconds] of data.speeds) {
      const o = el("option", "", name);
      o.value = String(seconds);
      v.speed.append(o);
    }
    v.speed.value = String(data.speeds.find(([name]) => name === "normal")[1]);
  }
  const fromPage = data.seq >= v.seq && !v.playing;  // the page's selection, unless an event of ours is still on its way
  if (fromPage) {
    v.seq = data.seq;
    v.sel = data.selected;
    v.ch = data.channel;
    v.cell = data.cell;
  }
}

async function show(v, data) {
  const t0 = performance.now();
  const key = data.payload_key;
  let entry = payloads.get(key);
  if (!entry && data.payload) {
    entry = { meta: data.payload, bytes: await inflate(data.payload.maps), geo: null };
    if (data.payload.geometry) entry.geo = JSON.parse(new TextDecoder().decode(await inflate(data.payload.geometry)));
    remember(key, entry);
  }
  if (!entry) {  // the page thought this browser had the maps: ask for them
    v.send({ kind: "need", seq: v.seq, have: null });
    return;
  }
  const look = `${key}|${data.shared_scale}|${data.scale}|${data.label_px}`;
  if (v.drawn !== look) {
    v.entry = entry;
    v.key = key;
    stop(v);
    build(v);
    v.drawn = look;
  }
  v.sel = Math.max(0, Math.min(v.sel, v.cols.length - 1));
  layout(v);
  v.wrap.dataset.drawMs = (performance.now() - t0).toFixed(1);  // data in -> drawn, for benchmarks
}

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const root = parentElement.querySelector(".nv-root");
  let v = views.get(parentElement);
  if (!v) {
    v = setup(root);
    views.set(parentElement, v);
  } else if (!root.contains(v.wrap)) {
    root.appendChild(v.wrap);
  }
  v.send = (event) => setTriggerValue("event", event);
  configure(v, data);
  show(v, data);
  // Streamlit calls this when the element goes, and also when new data arrived while this call was starting (a
  // rerun during Play): only a view whose element has left the page is taken down.
  return () => setTimeout(() => {
    const gone = views.get(parentElement);
    if (gone && !parentElement.isConnected) {
      stop(gone);
      gone.wrap.remove();
      views.delete(parentElement);
    }
  }, 0);
}
