// The playground: one tab per model of GET /v1/models, each calling this server's API.
// User text is only ever set as textContent (never as HTML). The attention views are the page
// that `nanoformer attention` writes (nanoformer/viz), shown in a frame and driven through its
// window.nanoformerAttention, so there is one drawing code path for attention.
(function () {
  "use strict";

  function $(selector, root) { return (root || document).querySelector(selector); }
  function el(name, className, text) {
    var e = document.createElement(name);
    if (className) { e.className = className; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function showError(panel, message) {
    $("#error").textContent = message;
    if (panel) { panel.dataset.error = message; }
  }
  function clearError(panel) { $("#error").textContent = ""; if (panel) { delete panel.dataset.error; } }

  function post(path, body) {
    return fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
      .then(function (response) {
        if (response.ok) { return response; }
        return response.json().then(function (data) {
          throw new Error((data.error && data.error.message) || ("HTTP " + response.status));
        }, function () { throw new Error("HTTP " + response.status); });
      });
  }
  function postJSON(path, body) { return post(path, body).then(function (r) { return r.json(); }); }
  function number(input) { return input.value === "" ? null : Number(input.value); }

  function bars(container, rows) {
    container.textContent = "";
    rows.forEach(function (row) {
      var line = el("div", "bar-row");
      line.appendChild(el("span", "label", row[0]));
      var bar = el("span", "bar");
      bar.style.width = Math.round(300 * row[1]) + "px";
      line.appendChild(bar);
      line.appendChild(el("span", "value", row[1].toFixed(3)));
      container.appendChild(line);
    });
  }

  // ------------------------------------------------------------------ attention frame

  function loadAttention(panel, model, text, target) {
    var frame = $(".attention-frame", panel);
    var body = { model: model.id, text: text, format: "html" };
    if (target) { body.target = target; }
    return post("/v1/attention", body).then(function (r) { return r.text(); }).then(function (html) {
      return new Promise(function (resolve) {
        frame.onload = function () {
          frame.hidden = false;
          frame.style.height = Math.max(500, frame.contentDocument.documentElement.scrollHeight + 20) + "px";
          resolve(frame.contentWindow.nanoformerAttention);
        };
        frame.srcdoc = html;
      });
    });
  }

  function attentionSection(panel, model) {
    var section = document.getElementById("attention-section").content.cloneNode(true);
    panel.appendChild(section);
    if (model.arch !== "encoder-decoder") { $(".attention-target", panel).hidden = true; }
    $(".run-attention", panel).addEventListener("click", function () {
      var text = $(".attention-text", panel).value;
      clearError(panel);
      loadAttention(panel, model, text, $(".attention-target", panel).value)
        .catch(function (e) { showError(panel, e.message); });
    });
  }

  // ------------------------------------------------------------------ generator

  function generatorPanel(panel, model) {
    panel.appendChild(document.getElementById("generator-panel").content.cloneNode(true));
    $(".run", panel).addEventListener("click", function () {
      var prompt = $(".prompt", panel).value, out = $(".generated", panel);
      $(".prompt-echo", panel).textContent = prompt;
      out.textContent = "";
      clearError(panel);
      var body = { model: model.id, prompt: prompt,
                   max_tokens: Math.min(number($(".max-tokens", panel)) || 64, model.context - 1),
                   temperature: number($(".temperature", panel)) || 0, stream: true };
      var topK = number($(".top-k", panel)), seed = number($(".seed", panel));
      if (topK) { body.top_k = topK; }
      if (seed !== null) { body.seed = seed; }
      panel.dataset.streaming = "1";
      post("/v1/completions", body).then(function (response) {
        var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
        function pump() {
          return reader.read().then(function (step) {
            if (step.done) { return; }
            buffer += decoder.decode(step.value, { stream: true });
            var events = buffer.split("\n\n");
            buffer = events.pop();
            events.forEach(function (event) {
              var data = event.replace(/^data: /, "");
              if (data === "[DONE]") { return; }
              var chunk = JSON.parse(data);
              if (chunk.error) { showError(panel, chunk.error.message); return; }
              out.textContent += chunk.choices[0].text;
            });
            return pump();
          });
        }
        return pump();
      }).catch(function (e) { showError(panel, e.message); })
        .then(function () { panel.dataset.streaming = "0"; });
    });
    attentionSection(panel, model);
  }

  // ------------------------------------------------------------------ translator

  function translatorPanel(panel, model) {
    panel.appendChild(document.getElementById("translator-panel").content.cloneNode(true));
    attentionSection(panel, model);
    $(".run", panel).addEventListener("click", function () {
      var text = $(".source", panel).value, tokens = $(".target-tokens", panel);
      clearError(panel);
      tokens.textContent = "";
      $(".translation", panel).textContent = "\u2026";
      postJSON("/v1/translate", { model: model.id, text: text, beam_size: number($(".beam-size", panel)) || 1 })
        .then(function (data) {
          var translation = data.translations[0].text;
          $(".translation", panel).textContent = translation;
          $(".attention-text", panel).value = text;
          $(".attention-target", panel).value = translation;
          return loadAttention(panel, model, text, translation);
        })
        .then(function (viewer) {
          var cross = viewer.data.maps.filter(function (m) { return m.kind === "cross"; })[0];
          $(".target-hint", panel).hidden = false;
          cross.q.forEach(function (token, index) {
            var button = el("button", "target-token", token);
            button.dataset.index = index;
            button.addEventListener("click", function () {
              tokens.querySelectorAll("button").forEach(function (b) { b.classList.remove("selected"); });
              button.classList.add("selected");
              viewer.show({ kind: "cross", layer: -1, head: "mean", query: index });
              panel.dataset.focused = String(index);
            });
            tokens.appendChild(button);
          });
          panel.dataset.translated = "1";
        })
        .catch(function (e) { $(".translation", panel).textContent = ""; showError(panel, e.message); });
    });
  }

  // ------------------------------------------------------------------ encoder

  function encoderPanel(panel, model) {
    panel.appendChild(document.getElementById("encoder-panel").content.cloneNode(true));
    $(".fill-mask-task", panel).hidden = model.routes.indexOf("/v1/fill-mask") < 0;
    $(".classify-task", panel).hidden = model.routes.indexOf("/v1/classify") < 0;
    $(".run", panel).addEventListener("click", function () {
      clearError(panel);
      postJSON("/v1/fill-mask", { model: model.id, text: $(".masked", panel).value,
                                  top_k: number($(".top-k", panel)) || 5 })
        .then(function (data) {
          var box = $(".candidates", panel);
          box.textContent = "";
          data.results[0].masks.forEach(function (candidates, i) {
            box.appendChild(el("h3", "", "[MASK] " + (i + 1)));
            var rows = el("div");
            bars(rows, candidates.map(function (c) { return [c.token, c.probability]; }));
            box.appendChild(rows);
          });
        }).catch(function (e) { showError(panel, e.message); });
    });
    $(".run-classify", panel).addEventListener("click", function () {
      clearError(panel);
      postJSON("/v1/classify", { model: model.id, text: $(".classify-text", panel).value })
        .then(function (data) {
          var probabilities = data.results[0].probabilities;
          bars($(".classes", panel), Object.keys(probabilities).map(function (k) { return [k, probabilities[k]]; }));
        }).catch(function (e) { showError(panel, e.message); });
    });
    attentionSection(panel, model);
  }

  // ------------------------------------------------------------------ tabs

  var BUILDERS = { generator: generatorPanel, translator: translatorPanel, encoder: encoderPanel };

  function select(name) {
    document.querySelectorAll("#tabs button").forEach(function (b) {
      b.setAttribute("aria-selected", String(b.dataset.model === name));
    });
    document.querySelectorAll(".panel").forEach(function (p) { p.hidden = p.dataset.model !== name; });
  }

  fetch("/v1/models").then(function (r) {
    if (!r.ok) { throw new Error("GET /v1/models: HTTP " + r.status); }
    return r.json();
  }).then(function (list) {
    $("#loading").remove();
    list.data.forEach(function (model) {
      var tab = el("button", "", model.id);
      tab.appendChild(el("span", "family", model.family));
      tab.dataset.model = model.id;
      tab.setAttribute("role", "tab");
      tab.addEventListener("click", function () { select(model.id); });
      $("#tabs").appendChild(tab);
      var panel = el("div", "panel");
      panel.dataset.model = model.id;
      panel.dataset.family = model.family;
      BUILDERS[model.family](panel, model);
      $("#panels").appendChild(panel);
    });
    if (list.data.length) { select(list.data[0].id); }
    document.body.dataset.ready = "1";
  }).catch(function (e) { showError(null, e.message); });
})();
