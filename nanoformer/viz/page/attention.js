(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("attention-data").textContent);
  var svg = document.getElementById("head-svg");
  var SVGNS = svg.namespaceURI;
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  var VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  var state = { kind: 0, layer: 0, head: 0, focus: null };
  var lines = [], values = { q: [], k: [] }, marks = { q: [], k: [] };

  function $(id) { return document.getElementById(id); }
  function current() { return DATA.maps[state.kind]; }

  function weights(map, layer, head) {
    if (head !== "mean") { return map.w[layer][head]; }
    var heads = map.w[layer], rows = heads[0].length, cols = heads[0][0].length, out = [];
    for (var i = 0; i < rows; i++) {
      var row = [];
      for (var j = 0; j < cols; j++) {
        var s = 0;
        for (var h = 0; h < heads.length; h++) { s += heads[h][i][j]; }
        row.push(s / heads.length);
      }
      out.push(row);
    }
    return out;
  }

  function mapMax(map) {
    if (map.max === undefined) {
      var m = 0;
      map.w.forEach(function (l) { l.forEach(function (h) { h.forEach(function (r) { r.forEach(function (v) { if (v > m) { m = v; } }); }); }); });
      map.max = m > 0 ? m : 1;
    }
    return map.max;
  }

  function colour(v, vmax) {
    var t = Math.max(0, Math.min(1, v / vmax)) * (VIRIDIS.length - 1);
    var i = Math.min(VIRIDIS.length - 2, Math.floor(t)), f = t - i, a = VIRIDIS[i], b = VIRIDIS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (c) { return Math.round(a[c] + (b[c] - a[c]) * f); }).join(",") + ")";
  }

  function fill(select, items, value) {
    select.textContent = "";
    items.forEach(function (item) {
      var o = document.createElement("option");
      o.value = String(item[0]);
      o.textContent = item[1];
      select.appendChild(o);
    });
    select.value = String(value);
  }

  function node(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) { parent.appendChild(e); }
    return e;
  }

  function headColour() { return state.head === "mean" ? "#333333" : PALETTE[state.head % PALETTE.length]; }

  function drawHeadView() {
    var map = current(), W = weights(map, state.layer, state.head);
    var longest = 1;
    map.q.concat(map.k).forEach(function (t) { longest = Math.max(longest, t.length); });
    var labelW = Math.min(220, 16 + 9 * longest), valueW = 46, gap = 160, rowH = 22, top = 14;
    var leftX = valueW + labelW, rightX = leftX + gap, rows = Math.max(map.q.length, map.k.length);
    var width = rightX + labelW + valueW, height = top * 2 + rowH * rows;
    svg.setAttribute("width", width);
    svg.setAttribute("height", height);
    svg.textContent = "";
    lines = [];
    values = { q: [], k: [] };
    marks = { q: [], k: [] };
    var gLines = node("g", { id: "lines" }, svg), colourNow = headColour();
    function y(i) { return top + rowH * i + rowH / 2; }
    for (var i = 0; i < map.q.length; i++) {
      for (var j = 0; j < map.k.length; j++) {
        var w = W[i][j];
        if (w < 0.005) { continue; }
        var line = node("line", { x1: leftX + 6, y1: y(i), x2: rightX - 6, y2: y(j), stroke: colourNow,
                                  "stroke-width": 2, "stroke-opacity": w.toFixed(4),
                                  "data-q": i, "data-k": j, "class": "attn-line" }, gLines);
        lines.push(line);
      }
    }
    ["q", "k"].forEach(function (side) {
      var tokens = side === "q" ? map.q : map.k;
      tokens.forEach(function (tok, index) {
        var mark = node("rect", { x: side === "q" ? valueW : rightX, y: y(index) - rowH / 2 + 2, width: labelW - 4,
                                  height: rowH - 4, "class": "mark", opacity: 0 }, svg);
        var text = node("text", { x: side === "q" ? leftX : rightX + 4, y: y(index),
                                  "text-anchor": side === "q" ? "end" : "start",
                                  "class": "token " + side, "data-index": index }, svg);
        text.textContent = tok;
        var value = node("text", { x: side === "q" ? 2 : rightX + labelW + 2, y: y(index),
                                   "text-anchor": "start", "class": "value " + side }, svg);
        text.addEventListener("mouseenter", function () { state.focus = { side: side, index: index }; applyFocus(); });
        text.addEventListener("mouseleave", function () { state.focus = null; applyFocus(); });
        marks[side].push(mark);
        values[side].push(value);
      });
    });
    applyFocus();
  }

  function applyFocus() {
    var map = current(), W = weights(map, state.layer, state.head), f = state.focus;
    lines.forEach(function (line) {
      var show = !f || Number(line.getAttribute(f.side === "q" ? "data-q" : "data-k")) === f.index;
      line.style.display = show ? "" : "none";
    });
    ["q", "k"].forEach(function (side) {
      values[side].forEach(function (v) { v.textContent = ""; });
      marks[side].forEach(function (m) { m.setAttribute("opacity", 0); });
    });
    if (!f) { return; }
    var other = f.side === "q" ? "k" : "q";
    marks[f.side][f.index].setAttribute("opacity", 0.35);
    values[other].forEach(function (v, index) {
      var w = f.side === "q" ? W[f.index][index] : W[index][f.index];
      v.textContent = w.toFixed(3);
      marks[other][index].setAttribute("opacity", Math.min(0.9, w));
    });
  }

  function drawMatrix() {
    var map = current(), W = weights(map, state.layer, state.head), canvas = $("matrix"), ctx = canvas.getContext("2d");
    var n = Math.max(map.q.length, map.k.length), cell = Math.max(6, Math.min(32, Math.floor(420 / n)));
    var margin = 90;
    canvas.width = margin + cell * map.k.length + 10;
    canvas.height = margin + cell * map.q.length + 10;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    var vmax = mapMax(map);
    for (var i = 0; i < map.q.length; i++) {
      for (var j = 0; j < map.k.length; j++) {
        ctx.fillStyle = colour(W[i][j], vmax);
        ctx.fillRect(margin + j * cell, margin + i * cell, cell, cell);
      }
    }
    ctx.fillStyle = "#222";
    ctx.font = Math.min(13, Math.max(8, cell - 4)) + "px sans-serif";
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    map.q.forEach(function (t, i) { ctx.fillText(t, margin - 4, margin + i * cell + cell / 2, margin - 6); });
    map.k.forEach(function (t, j) {
      ctx.save();
      ctx.translate(margin + j * cell + cell / 2, margin - 4);
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      ctx.fillText(t, 0, 0, margin - 6);
      ctx.restore();
    });
    canvas.onmousemove = function (event) {
      var r = canvas.getBoundingClientRect();
      var j = Math.floor((event.clientX - r.left - margin) / cell), i = Math.floor((event.clientY - r.top - margin) / cell);
      $("cell-info").textContent = (i >= 0 && j >= 0 && i < map.q.length && j < map.k.length)
        ? "query \u201c" + map.q[i] + "\u201d \u2192 key \u201c" + map.k[j] + "\u201d: " + W[i][j].toFixed(4)
        : "\u00a0";
    };
  }

  function drawModelView() {
    var map = current(), grid = $("model-grid"), vmax = mapMax(map);
    var n = Math.max(map.q.length, map.k.length), size = Math.max(48, Math.min(110, Math.floor(720 / map.heads)));
    grid.textContent = "";
    grid.style.gridTemplateColumns = "4.5em repeat(" + map.heads + ", " + (size + 4) + "px)";
    grid.appendChild(document.createElement("span"));
    for (var h = 0; h < map.heads; h++) {
      var head = document.createElement("span");
      head.className = "axis";
      head.textContent = "head " + (h + 1);
      grid.appendChild(head);
    }
    for (var l = 0; l < map.layers; l++) {
      var label = document.createElement("span");
      label.className = "axis";
      label.textContent = "layer " + (l + 1);
      grid.appendChild(label);
      for (h = 0; h < map.heads; h++) {
        var c = document.createElement("canvas"), W = map.w[l][h], ctx;
        c.width = size;
        c.height = size;
        c.title = "layer " + (l + 1) + ", head " + (h + 1);
        c.dataset.layer = l;
        c.dataset.head = h;
        if (l === state.layer && h === state.head) { c.className = "selected"; }
        ctx = c.getContext("2d");
        var cw = size / map.k.length, ch = size / map.q.length;
        for (var i = 0; i < map.q.length; i++) {
          for (var j = 0; j < map.k.length; j++) {
            ctx.fillStyle = colour(W[i][j], vmax);
            ctx.fillRect(j * cw, i * ch, Math.ceil(cw), Math.ceil(ch));
          }
        }
        c.addEventListener("click", function (event) {
          state.layer = Number(event.currentTarget.dataset.layer);
          state.head = Number(event.currentTarget.dataset.head);
          syncControls();
          draw();
        });
        grid.appendChild(c);
      }
    }
    if (n === 0) { grid.textContent = "no tokens"; }
  }

  function syncControls() {
    var map = current();
    if (state.layer >= map.layers) { state.layer = map.layers - 1; }
    if (state.head !== "mean" && state.head >= map.heads) { state.head = 0; }
    fill($("kind"), DATA.maps.map(function (m, i) { return [i, m.title]; }), state.kind);
    var layers = [], heads = [];
    for (var l = 0; l < map.layers; l++) { layers.push([l, String(l + 1)]); }
    for (var h = 0; h < map.heads; h++) { heads.push([h, String(h + 1)]); }
    heads.push(["mean", "mean of all heads"]);
    fill($("layer"), layers, state.layer);
    fill($("head"), heads, state.head);
  }

  function draw() {
    state.focus = null;
    drawHeadView();
    drawMatrix();
    drawModelView();
    document.body.dataset.drawn = String(Number(document.body.dataset.drawn || 0) + 1);
  }

  function summary() {
    var parts = [DATA.arch + " model", "text: \u201c" + DATA.source + "\u201d"];
    if (DATA.target !== null) {
      parts.push((DATA.target_generated ? "its own greedy translation" : "target") + ": \u201c" + DATA.target + "\u201d");
    }
    $("summary").textContent = parts.join(" \u00b7 ");
    DATA.notes.forEach(function (note) {
      var li = document.createElement("li");
      li.textContent = note;
      $("notes").appendChild(li);
    });
  }

  $("kind").addEventListener("change", function (e) { state.kind = Number(e.target.value); syncControls(); draw(); });
  $("layer").addEventListener("change", function (e) { state.layer = Number(e.target.value); draw(); });
  $("head").addEventListener("change", function (e) {
    state.head = e.target.value === "mean" ? "mean" : Number(e.target.value);
    draw();
  });
  function show(options) {
    var kind = DATA.maps.findIndex(function (m) { return m.kind === options.kind; });
    if (kind >= 0) { state.kind = kind; }
    var map = current();
    if (options.layer !== undefined) { state.layer = options.layer < 0 ? map.layers + options.layer : options.layer; }
    if (options.head !== undefined) { state.head = options.head; }
    syncControls();
    draw();
    if (options.query !== undefined && options.query !== null) {
      state.focus = { side: "q", index: options.query };
      applyFocus();
    }
  }

  window.nanoformerAttention = { data: DATA, show: show };
  summary();
  syncControls();
  draw();
  document.body.dataset.ready = "1";
})();
