// cnnviz's drawing canvas (a Streamlit Components v2 component, mounted by cnnviz/canvas.py).
// Strokes are drawn as the pointer moves; the drawing goes to Streamlit as a PNG data URL the moment a stroke ends
// (no debounce: the prediction is what the learner waits for). Undo and Clear send at once too; an empty canvas
// sends null. Mouse, touch and pen all draw (pointer events; touch-action: none keeps a finger from scrolling).
// A canvas mounted anew gets its last drawing back as `data.initial` (a PNG the page kept): it is painted under any
// new strokes as the board's `base`, and Undo with no stroke left, or Clear, removes it.
const boards = new WeakMap();  // parentElement -> board, so a rerun keeps the drawing

function button(text, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "cnnviz-button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.title = label;
  return b;
}

function setup(root) {
  const wrap = document.createElement("div");
  wrap.className = "cv-wrap";
  const canvas = document.createElement("canvas");
  canvas.className = "cv-canvas";
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", "Drawing canvas: draw with the mouse, a finger or a pen");
  const bar = document.createElement("div");
  bar.className = "cv-bar";
  const undo = button("Undo", "Undo the last stroke");
  const clear = button("Clear", "Clear the canvas");
  bar.append(undo, clear);
  wrap.append(canvas, bar);
  root.appendChild(wrap);
  const b = { wrap, canvas, ctx: canvas.getContext("2d"), undo, clear, strokes: [], base: null, current: null,
              pointer: null, size: 0, style: null, send: () => {} };

  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
  };
  canvas.addEventListener("pointerdown", (e) => {
    if (b.current || (e.pointerType === "mouse" && e.button !== 0)) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    b.pointer = e.pointerId;
    b.current = [at(e)];
    b.strokes.push(b.current);
    dot(b, b.current[0]);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!b.current || e.pointerId !== b.pointer) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of events.length ? events : [e]) {
      const p = at(ev), last = b.current[b.current.length - 1];
      if (p[0] === last[0] && p[1] === last[1]) continue;
      b.current.push(p);
      segment(b, last, p);
    }
  });
  const end = (e) => {
    if (!b.current || e.pointerId !== b.pointer) return;
    b.current = null;
    b.pointer = null;
    changed(b);
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  canvas.addEventListener("lostpointercapture", end);
  undo.addEventListener("click", () => {
    if (b.strokes.length) b.strokes.pop();
    else if (b.base) b.base = null;
    else return;
    redraw(b);
    changed(b);
  });
  clear.addEventListener("click", () => {
    if (!drawn(b)) return;
    b.strokes = [];
    b.base = null;
    redraw(b);
    changed(b);
  });
  return b;
}

function pen(b) {
  const c = b.ctx;
  c.strokeStyle = c.fillStyle = b.style.stroke;
  c.lineWidth = b.style.width;
  c.lineCap = c.lineJoin = "round";
}

function dot(b, p) {
  pen(b);
  b.ctx.beginPath();
  b.ctx.arc(p[0], p[1], b.style.width / 2, 0, 2 * Math.PI);
  b.ctx.fill();
}

function segment(b, p, q) {
  pen(b);
  b.ctx.beginPath();
  b.ctx.moveTo(p[0], p[1]);
  b.ctx.lineTo(q[0], q[1]);
  b.ctx.stroke();
}

function redraw(b) {
  const c = b.ctx;
  c.fillStyle = b.style.background;
  c.fillRect(0, 0, b.canvas.width, b.canvas.height);
  if (b.base) c.drawImage(b.base, 0, 0, b.canvas.width, b.canvas.height);
  for (const s of b.strokes) {
    dot(b, s[0]);
    if (s.length < 2) continue;
    pen(b);
    c.beginPath();
    c.moveTo(s[0][0], s[0][1]);
    for (const p of s.slice(1)) c.lineTo(p[0], p[1]);
    c.stroke();
  }
  buttons(b);
}

function drawn(b) {
  return b.strokes.length > 0 || b.base !== null;
}

function buttons(b) {
  b.undo.disabled = b.clear.disabled = !drawn(b);
}

function changed(b) {
  buttons(b);
  b.send(drawn(b) ? b.canvas.toDataURL("image/png") : null);
}

function restore(b, url) {  // the page's state already holds this drawing: nothing is sent
  if (typeof url !== "string" || !url.startsWith("data:image/png;base64,")) return;
  const img = new Image();
  img.onload = () => {
    if (drawn(b)) return;  // the learner drew before it loaded
    b.base = img;
    redraw(b);
  };
  img.onerror = () => {  // not a picture after all: the page forgets it, and the canvas is empty as it shows
    if (!drawn(b)) b.send(null);
  };
  img.src = url;
}

function configure(b, data) {
  const style = { stroke: data.stroke, background: data.background, width: data.stroke_width };
  const size = data.size;
  if (size !== b.size) {  // a new size: the old strokes would not fit
    b.size = size;
    b.canvas.width = b.canvas.height = size;
    b.canvas.style.width = b.canvas.style.height = `${size}px`;
    b.wrap.style.width = `${size}px`;
    b.strokes = [];
    b.base = null;
  }
  b.style = style;
  redraw(b);
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  const root = parentElement.querySelector(".cv-root");
  let b = boards.get(parentElement);
  let fresh = false;
  if (!b) {
    b = setup(root);
    boards.set(parentElement, b);
    fresh = true;
  } else if (!root.contains(b.wrap)) {
    root.appendChild(b.wrap);
  }
  b.send = (value) => setStateValue("drawing", value);
  configure(b, data);
  if (fresh && data.initial) restore(b, data.initial);
  return () => {
    const gone = boards.get(parentElement);
    if (gone) {
      gone.wrap.remove();
      boards.delete(parentElement);
    }
  };
}
