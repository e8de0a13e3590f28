// Tauon playground: chat and completions streamed from /v1 (browser session + CSRF header), side by side,
// embeddings and classifiers, Explain (token attributions as a background job, shown as plotly heatmaps),
// and sessions saved through /api/playground/sessions/. Uses app.js's helpers (apiCall, apiError, el,
// newJobBar, watchJob, setBar, csrfToken). No framework.
"use strict";

(function () {
  const root = document.getElementById("playground");
  if (!root) return;
  const $ = (sel) => root.querySelector(sel);
  const deployments = JSON.parse(document.getElementById("pg-deployments").textContent) || [];
  const saved = JSON.parse(document.getElementById("pg-session").textContent);
  const byName = Object.fromEntries(deployments.map((d) => [d.name, d]));
  const readOnly = root.dataset.readOnly === "true";
  const TEXT_GEN = "text-generation";

  const state = {
    id: saved && !readOnly ? saved.id : null,
    data: { params: {}, system: "", turns: [], texts: "", text: "", similarity: null, predictions: null,
            clsExplanation: null },
  };
  let controllers = [];
  let saving = Promise.resolve();

  // ---- helpers ------------------------------------------------------------------------------------------
  const num = (input) => (input.value === "" ? null : Number(input.value));
  const fmt = (v, digits) => (v === null || v === undefined || Number.isNaN(v) ? "—" : Number(v).toFixed(digits));
  const visible = (t) => (t === "" ? "∅" : t.replace(/\n/g, "⏎").replace(/\t/g, "⇥"));
  const deployment = () => byName[$("#pg-deployment").value];
  const mode = () => $("#pg-mode").value;

  function showError(scope, message) {
    const box = scope.querySelector(".form-error");
    if (!box) return;
    box.textContent = message || "";
    box.hidden = !message;
  }

  function download(name, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const a = el("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  const csvCell = (v) => (/[",\n\r]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));

  function toCsv(result) {
    const lines = [["output_token", ...result.input_tokens].map(csvCell).join(",")];
    result.attributions.forEach((row, i) => lines.push([result.output_tokens[i], ...row].map(csvCell).join(",")));
    return lines.join("\n") + "\n";
  }

  // ---- controls -----------------------------------------------------------------------------------------
  function panelFor(d) {
    if (!d) return null;
    if (d.task === TEXT_GEN) return "text-generation";
    if (d.task === "embeddings") return "embeddings";
    return "classify";
  }

  function applyDeployment(keepParams) {
    const d = deployment();
    const panel = panelFor(d);
    root.querySelectorAll("[data-panel]").forEach((p) => { p.hidden = p.dataset.panel !== panel; });
    root.querySelectorAll("[data-gen-only]").forEach((n) => { n.hidden = panel !== "text-generation"; });
    root.querySelectorAll("[data-chat-only]").forEach((n) => { n.hidden = panel !== "text-generation" || mode() !== "chat"; });
    root.querySelectorAll("[data-explain-options]").forEach((n) => {
      n.hidden = !d || !d.explainable;
    });
    root.querySelectorAll("[data-cls-only]").forEach((n) => { n.hidden = !d || d.task !== "text-classification"; });
    const status = $("#pg-deployment-status");
    status.textContent = d ? `${d.model} · ${statusWord(d.status)}: ${d.reason}` : t("Create a deployment first (Deployments page).");
    status.className = "small " + (d && d.status === "ready" ? "muted" : "error");
    if (d && d.task === "text-classification") {
      $("#pg-method").value = "integrated_gradients";
      $("#pg-method").disabled = true;
    } else {
      $("#pg-method").disabled = readOnly;
    }
    if (!keepParams && d) {
      const s = d.sampling || {};
      $("#pg-temperature").value = s.temperature ?? "";
      $("#pg-top-p").value = s.top_p ?? "";
      $("#pg-max-tokens").value = s.max_tokens ?? "";
    }
    if (d && d.max_tokens) $("#pg-max-tokens").max = d.max_tokens;
    explainCapNote();
  }

  // Explain covers answers of at most maxExplain tokens: say so beside Max tokens before anything is sent, and
  // an answer longer than that gets no working Explain button but the reason.
  const maxExplain = Number(root.dataset.maxExplainTokens) || 0;
  function explainCapNote() {
    const note = $("#pg-explain-cap");
    if (!note) return;
    const d = deployment();
    const wanted = num($("#pg-max-tokens"));
    const over = Boolean(d && d.explainable && maxExplain && (wanted === null || wanted > maxExplain));
    note.hidden = !over;
    note.textContent = over ? t("Explain covers answers of up to %(n)s tokens; set %(n)s or fewer to explain the answers.", { n: maxExplain }) : "";
  }

  function params() {
    const p = { temperature: num($("#pg-temperature")), top_p: num($("#pg-top-p")),
                max_tokens: num($("#pg-max-tokens")), seed: num($("#pg-seed")) };
    const stop = $("#pg-stop").value.split(",").map((s) => s.trim()).filter(Boolean);
    if (stop.length) p.stop = stop;
    return p;
  }

  function explainOptions() {
    return { method: $("#pg-method").value, span: $("#pg-span").value, words: $("#pg-words").checked };
  }

  function collect() {
    state.data.params = { ...params(), stop: $("#pg-stop").value };
    state.data.system = $("#pg-system").value;
    state.data.explain = explainOptions();
    state.data.texts = $("#pg-texts").value;
    state.data.text = $("#pg-text").value;
  }

  // ---- saving ---------------------------------------------------------------------------------------------
  function title() {
    const typed = $("#pg-title").value.trim();
    if (typed) return typed;
    const first = state.data.turns.length ? state.data.turns[0].user : state.data.text || state.data.texts;
    return (first || "Untitled").replace(/\s+/g, " ").slice(0, 80);
  }

  function save() {
    if (readOnly) return saving;
    collect();
    saving = saving.then(async () => {
      const panel = panelFor(deployment());
      const body = { title: title(), mode: panel === "text-generation" || !panel ? mode() : panel,
                     deployment: $("#pg-deployment").value, compare_with: $("#pg-compare").value, data: state.data };
      const res = state.id
        ? await apiCall(`/api/playground/sessions/${state.id}/`, "PATCH", body, root)
        : await apiCall("/api/playground/sessions/", "POST", body, root);
      if (!res.ok) { $("#pg-saved").textContent = t("not saved: %(error)s", { error: apiError(res.status, res.text) }); return; }
      const created = !state.id;
      state.id = res.data.id;
      $("#pg-saved").textContent = t("saved");
      if (created) {
        history.replaceState(null, "", `/playground/${state.id}/`);
        const list = $("#pg-history");
        const empty = $("#pg-history-empty");
        if (empty) empty.remove();
        const li = el("li");
        li.className = "current";
        const a = el("a", res.data.title);
        a.href = `/playground/${state.id}/`;
        li.append(a, " ", el("span", res.data.deployment, "small muted"));
        list.prepend(li);
      }
    });
    return saving;
  }

  async function share(on) {
    await save();
    if (!state.id) return;
    const res = await apiCall(`/api/playground/sessions/${state.id}/share`, on ? "POST" : "DELETE", undefined, root);
    if (!res.ok) { $("#pg-saved").textContent = apiError(res.status, res.text); return; }
    $("#pg-share-row").hidden = !res.data.share_url;
    $("#pg-share-url").value = res.data.share_url || "";
    $("#pg-saved").textContent = on ? t("shared: anyone signed in with the link can open it") : t("no longer shared");
  }

  // ---- generation -------------------------------------------------------------------------------------------
  function messagesFor(turnIndex, column) {
    const msgs = [];
    const system = $("#pg-system").value;
    if (system.trim()) msgs.push({ role: "system", content: system });
    state.data.turns.slice(0, turnIndex + 1).forEach((turn, i) => {
      if (turn.mode !== "chat") return;
      msgs.push({ role: "user", content: turn.user });
      const answer = turn.answers[column];
      if (i < turnIndex && answer && !answer.error) msgs.push({ role: "assistant", content: answer.text });
    });
    return msgs;
  }

  async function streamInto(url, body, answer, view, signal) {
    const started = performance.now();
    const resp = await fetch(url, {
      method: "POST", credentials: "same-origin", signal, body: JSON.stringify(body),
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", "X-CSRFToken": csrfToken(root) },
    });
    if (!resp.ok) throw new Error(apiError(resp.status, await resp.text()));
    answer.replica = resp.headers.get("X-Tauon-Replica");
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const payload = line.slice(6);
          if (payload === "[DONE]") continue;
          const chunk = JSON.parse(payload);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) answer.usage = chunk.usage;
          const choice = chunk.choices && chunk.choices[0];
          if (!choice) continue;
          const piece = choice.delta ? choice.delta.content : choice.text;
          if (choice.token_ids) answer.token_ids = (answer.token_ids || []).concat(choice.token_ids);
          if (piece) {
            if (answer.ttft_s === null) answer.ttft_s = (performance.now() - started) / 1000;
            answer.text += piece;
            view.text.textContent = answer.text;
          }
          if (choice.finish_reason) answer.finish = choice.finish_reason;
        }
      }
    }
    answer.elapsed_s = (performance.now() - started) / 1000;
    const n = answer.usage ? answer.usage.completion_tokens : 0;
    const decoding = answer.elapsed_s - (answer.ttft_s || 0);
    answer.tokens_per_s = n > 1 && decoding > 0 ? (n - 1) / decoding : null;
  }

  async function send() {
    const input = $("#pg-input");
    const text = input.value;
    const composer = root.querySelector(".pg-composer");
    showError(composer, "");
    if (!text.trim()) { showError(composer, t("Type a message first.")); return; }
    const d = deployment();
    if (!d) return;
    const names = [d.name];
    const other = $("#pg-compare").value;
    if (other && other !== d.name) names.push(other);
    const turn = { mode: mode(), user: text, answers: names.map((name) => ({
      deployment: name, text: "", finish: null, usage: null, ttft_s: null, tokens_per_s: null, elapsed_s: null,
      error: null, params: params(), explanation: null })) };
    state.data.turns.push(turn);
    const index = state.data.turns.length - 1;
    const views = renderTurn(turn, index);
    input.value = "";
    $("#pg-send").disabled = true;
    $("#pg-stop-button").disabled = false;
    controllers = names.map(() => new AbortController());
    await Promise.all(turn.answers.map(async (answer, k) => {
      // return_token_ids: the answer's exact tokens, so Explain attributes to them, not to re-tokenized text
      const body = { model: answer.deployment, stream: true, stream_options: { include_usage: true },
                     return_token_ids: true };
      Object.entries(answer.params).forEach(([key, v]) => { if (v !== null && v !== undefined) body[key] = v; });
      let url = "/v1/completions";
      if (turn.mode === "chat") { url = "/v1/chat/completions"; body.messages = messagesFor(index, k); }
      else body.prompt = turn.user;
      answer.request = turn.mode === "chat" ? { messages: body.messages } : { prompt: body.prompt };
      views[k].box.classList.add("streaming");
      try {
        await streamInto(url, body, answer, views[k], controllers[k].signal);
      } catch (err) {
        if (err.name === "AbortError") answer.finish = "stopped";
        else answer.error = err.message;
      }
      views[k].box.classList.remove("streaming");
      renderAnswer(views[k], answer, index, k);
    }));
    controllers = [];
    $("#pg-send").disabled = false;
    $("#pg-stop-button").disabled = true;
    save();
  }

  function stop() {
    controllers.forEach((c) => c.abort());
  }

  // ---- rendering turns and answers --------------------------------------------------------------------------
  function renderTurn(turn, index) {
    const box = el("div", null, "card pg-turn");
    box.dataset.turn = String(index);
    const user = el("div", null, "pg-user");
    user.append(el("span", turn.mode === "chat" ? t("You") : t("Prompt"), "pg-who"), el("div", turn.user, "pg-text"));
    const row = el("div", null, "pg-answers" + (turn.answers.length > 1 ? " side-by-side" : ""));
    const views = turn.answers.map((answer, k) => {
      const col = el("div", null, "pg-answer");
      col.dataset.deployment = answer.deployment;
      const head = el("div", null, "pg-who");
      head.textContent = answer.deployment;
      const text = el("div", answer.text, "pg-text answer-text");
      const stats = el("div", null, "small muted answer-stats");
      const actions = el("div", null, "pg-buttons answer-actions");
      const explain = el("div", null, "pg-explain");
      col.append(head, text, stats, actions, explain);
      row.append(col);
      return { box: col, text, stats, actions, explain };
    });
    box.append(user, row);
    $("#pg-turns").append(box);
    turn.answers.forEach((answer, k) => { if (answer.finish || answer.error) renderAnswer(views[k], answer, index, k); });
    return views;
  }

  function renderAnswer(view, answer, index, column) {
    view.text.textContent = answer.text;
    if (answer.error) {
      view.stats.replaceChildren(el("span", answer.error, "error"));
    } else {
      const u = answer.usage;
      const parts = [];
      if (u) parts.push(t("%(prompt)s prompt + %(completion)s completion tokens", { prompt: u.prompt_tokens, completion: u.completion_tokens }));
      parts.push(t("first token after %(s)s s", { s: fmt(answer.ttft_s, 2) }), `${fmt(answer.tokens_per_s, 1)} tok/s`);
      if (answer.finish) parts.push(t("finish: %(reason)s", { reason: answer.finish }));
      view.stats.textContent = parts.join(" · ");
    }
    view.actions.replaceChildren();
    const d = byName[answer.deployment];
    if (answer.text && !answer.error && d && d.explainable && !readOnly) {
      const button = el("button", t("Explain"), "small explain-button");
      button.type = "button";
      const tokens = answer.usage ? answer.usage.completion_tokens : (answer.token_ids || []).length;
      if (maxExplain && tokens > maxExplain) { // the server would refuse it: say why here instead
        button.disabled = true;
        view.actions.append(button, el("span", t("This answer has %(tokens)s tokens; Explain covers up to %(n)s. Set Max tokens to %(n)s or fewer and send again to explain.", { tokens, n: maxExplain }), "small muted explain-cap"));
      } else {
        button.addEventListener("click", () => explainAnswer(view, answer, index, column));
        view.actions.append(button);
      }
    }
    if (answer.explanation && answer.explanation.result) renderExplanation(view.explain, answer.explanation);
  }

  // ---- explain ------------------------------------------------------------------------------------------------
  async function startExplain(name, body, box, onDone) {
    box.replaceChildren();
    const res = await apiCall(`/api/deployments/${encodeURIComponent(name)}/explain`, "POST", body, root);
    if (!res.ok) { box.append(el("p", apiError(res.status, res.text), "error explain-error")); return; }
    const id = String(res.data.job);
    const bar = newJobBar(id);
    bar.querySelector(".label").textContent = t("explain queued");
    const cancel = el("button", t("Cancel"), "small");
    cancel.type = "button";
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      await apiCall(`/api/deployments/${encodeURIComponent(name)}/explain/${id}/cancel`, "POST", undefined, root);
    });
    const row = el("div", null, "pg-progress");
    row.append(bar, cancel);
    box.append(row);
    watchJob(bar, (job) => {
      cancel.remove();
      if (job.status !== "succeeded") return;
      row.remove();
      onDone({ job: job.id, ...body, result: job.result });
    });
  }

  function explainAnswer(view, answer, index, column) {
    const opts = explainOptions();
    const request = answer.request || (state.data.turns[index].mode === "chat"
      ? { messages: messagesFor(index, column) } : { prompt: state.data.turns[index].user });
    const exact = answer.token_ids && answer.token_ids.length;
    const body = { ...request, output: exact ? answer.token_ids : answer.text, ...opts };
    startExplain(answer.deployment, body, view.explain, (explanation) => {
      answer.explanation = explanation;
      renderExplanation(view.explain, explanation);
      save();
    });
  }

  function colour(v, maxAbs) {
    const a = maxAbs > 0 ? Math.min(1, Math.abs(v) / maxAbs) : 0;
    return v >= 0 ? `rgba(197, 48, 48, ${a.toFixed(3)})` : `rgba(43, 108, 176, ${a.toFixed(3)})`;
  }

  function renderExplanation(box, explanation) {
    const r = explanation.result;
    box.replaceChildren();
    const head = el("p", null, "small muted explain-summary");
    head.textContent = t(r.method.replace(/_/g, " ")) + " · " + t(explanation.words
      ? "%(out)s output × %(in)s input words · %(seqs)s sequences in %(batches)s batched forward passes · %(s)s s"
      : "%(out)s output × %(in)s input tokens · %(seqs)s sequences in %(batches)s batched forward passes · %(s)s s",
    { out: r.output_tokens.length, in: r.input_tokens.length, seqs: r.forward_passes, batches: r.batches, s: fmt(r.seconds, 1) });
    box.append(head);
    if (r.output_round_trips === false) {
      box.append(el("p", t("Note: this answer's text tokenizes differently from the tokens the model produced; the rows are its re-tokenization."), "small error"));
    }
    const heat = el("div", null, "chart heatmap");
    const bars = el("div", null, "chart totals");
    box.append(heat, bars);
    const tools = el("div", null, "pg-buttons");
    const buttons = [["JSON", () => download("attribution.json", "application/json", JSON.stringify(r, null, 2))],
                     ["CSV", () => download("attribution.csv", "text/csv", toCsv(r))],
                     ["PNG", () => window.Plotly && Plotly.downloadImage(heat, { format: "png", filename: "attribution",
                                                                                  width: 1400, height: 800 })]];
    buttons.forEach(([label, fn]) => {
      const b = el("button", t("Download %(format)s", { format: label }), "small");
      b.type = "button";
      b.addEventListener("click", fn);
      tools.append(b);
    });
    box.append(tools);
    const rows = r.output_tokens.length;
    const cols = r.input_tokens.length;
    heat.dataset.rows = String(rows);
    heat.dataset.cols = String(cols);
    const flat = r.attributions.flat();
    const maxAbs = Math.max(1e-12, ...flat.map(Math.abs));
    const totals = r.input_tokens.map((_, j) => r.attributions.reduce((s, row) => s + row[j], 0));
    if (!window.Plotly) { heat.textContent = t("Charts need the plotly package on the server."); return; }
    const xs = [...Array(cols).keys()];
    const xlabels = r.input_tokens.map(visible);
    const ylabels = r.output_tokens.map(visible);
    const custom = r.attributions.map((row, i) => row.map((_, j) => [ylabels[i], xlabels[j]]));
    const scale = [[0, "#2b6cb0"], [0.5, "#ffffff"], [1, "#c53030"]];
    Plotly.newPlot(heat, [{
      type: "heatmap", z: r.attributions, x: xs, y: [...Array(rows).keys()], zmid: 0, zmin: -maxAbs, zmax: maxAbs,
      colorscale: scale, customdata: custom, xgap: 1, ygap: 1,
      hovertemplate: t("output") + " %{customdata[0]}<br>" + t("input") + " %{customdata[1]}<br>" + t("attribution")
        + " %{z:.4f}<extra></extra>",
      colorbar: { title: { text: t("attribution") }, thickness: 12 },
    }], {
      margin: { l: 90, r: 10, t: 10, b: 90 }, height: Math.max(220, 90 + 22 * rows),
      xaxis: { tickvals: xs, ticktext: xlabels, tickangle: -55, automargin: true },
      yaxis: { tickvals: [...Array(rows).keys()], ticktext: ylabels, autorange: "reversed", automargin: true },
    }, { displaylogo: false, responsive: true });
    Plotly.newPlot(bars, [{
      type: "bar", x: xs, y: totals, marker: { color: totals.map((v) => colour(v, Math.max(...totals.map(Math.abs)))) },
      customdata: xlabels, hovertemplate: t("input") + " %{customdata}<br>" + t("total") + " %{y:.4f}<extra></extra>",
    }], {
      margin: { l: 90, r: 10, t: 24, b: 90 }, height: 220, title: { text: t("each input's total"), font: { size: 12 } },
      xaxis: { tickvals: xs, ticktext: xlabels, tickangle: -55, automargin: true },
    }, { displaylogo: false, responsive: true });
    void maxAbs;
  }

  // ---- encoders ---------------------------------------------------------------------------------------------
  async function embed() {
    const panel = $("#pg-embeddings");
    showError(panel, "");
    const texts = $("#pg-texts").value.split("\n").map((t) => t.trim()).filter(Boolean);
    if (texts.length < 2) { showError(panel, t("Give at least two texts, one per line.")); return; }
    const res = await apiCall("/v1/embeddings", "POST", { model: deployment().name, input: texts }, root);
    if (!res.ok) { showError(panel, apiError(res.status, res.text)); return; }
    const vecs = res.data.data.map((d) => d.embedding);
    const norm = vecs.map((v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0)) || 1);
    const sim = vecs.map((a, i) => vecs.map((b, j) => a.reduce((s, x, k) => s + x * b[k], 0) / (norm[i] * norm[j])));
    state.data.similarity = { texts, matrix: sim };
    renderSimilarity();
    save();
  }

  function renderSimilarity() {
    const s = state.data.similarity;
    const box = $("#pg-similarity");
    if (!s || !window.Plotly) return;
    const idx = [...s.texts.keys()];
    const labels = s.texts.map((t) => (t.length > 28 ? t.slice(0, 27) + "…" : t));
    box.dataset.size = String(s.texts.length);
    Plotly.newPlot(box, [{ type: "heatmap", z: s.matrix, x: idx, y: idx, zmin: -1, zmax: 1, zmid: 0,
      colorscale: [[0, "#2b6cb0"], [0.5, "#ffffff"], [1, "#c53030"]], texttemplate: "%{z:.2f}",
      hovertemplate: "cosine %{z:.4f}<extra></extra>" }], {
      margin: { l: 160, r: 10, t: 10, b: 120 }, height: 160 + 40 * idx.length,
      xaxis: { tickvals: idx, ticktext: labels, tickangle: -35 },
      yaxis: { tickvals: idx, ticktext: labels, autorange: "reversed" },
    }, { displaylogo: false, responsive: true });
  }

  async function predict() {
    const panel = $("#pg-classify");
    showError(panel, "");
    const text = $("#pg-text").value;
    if (!text.trim()) { showError(panel, t("Type a text first.")); return; }
    const d = deployment();
    const res = await apiCall(`/api/deployments/${encodeURIComponent(d.name)}/predict`, "POST", { input: [text] }, root);
    if (!res.ok) { showError(panel, apiError(res.status, res.text)); return; }
    state.data.predictions = { task: d.task, text, results: res.data.results[0] };
    state.data.clsExplanation = null;
    $("#pg-cls-explain").replaceChildren();
    renderPredictions();
    save();
  }

  function renderPredictions() {
    const p = state.data.predictions;
    const box = $("#pg-predictions");
    box.replaceChildren();
    if (!p) return;
    if (p.task === "text-classification") {
      const list = el("ul", null, "pg-labels");
      p.results.forEach((r) => {
        const li = el("li");
        const bar = el("span", null, "pg-score");
        bar.style.width = `${Math.round(r.score * 100)}%`;
        li.append(el("span", r.label, "pg-label"), bar, el("span", fmt(r.score, 4), "small muted"));
        list.append(li);
      });
      box.append(list);
      return;
    }
    const para = el("p", null, "pg-entities");
    let at = 0;
    p.results.forEach((e) => {
      para.append(p.text.slice(at, e.start));
      const mark = el("mark", p.text.slice(e.start, e.end));
      mark.title = `${e.entity_group} ${fmt(e.score, 3)}`;
      mark.append(el("sup", e.entity_group));
      para.append(mark);
      at = e.end;
    });
    para.append(p.text.slice(at));
    box.append(para);
  }

  function explainText() {
    const text = $("#pg-text").value;
    const box = $("#pg-cls-explain");
    startExplain(deployment().name, { input: text, method: "integrated_gradients", words: $("#pg-words").checked },
      box, (explanation) => {
        state.data.clsExplanation = { ...explanation, text };
        renderTextAttribution();
        save();
      });
  }

  function renderTextAttribution() {
    const x = state.data.clsExplanation;
    const box = $("#pg-cls-explain");
    box.replaceChildren();
    if (!x) return;
    const r = x.result;
    const row = r.attributions[0];
    const maxAbs = Math.max(1e-12, ...row.map(Math.abs));
    box.append(el("p", t("Why “%(label)s” (%(score)s): red pushed towards it, blue away.", { label: r.label, score: fmt(r.score, 3) }), "small muted"));
    const para = el("p", null, "pg-attributed");
    let at = 0;
    r.spans.forEach(([start, end], j) => {
      para.append(x.text.slice(at, start));
      const span = el("span", x.text.slice(start, end), "pg-token");
      span.style.background = colour(row[j], maxAbs);
      span.title = `${r.input_tokens[j]}: ${row[j].toFixed(6)}`;
      span.dataset.attribution = String(row[j]);
      para.append(span);
      at = end;
    });
    para.append(x.text.slice(at));
    box.append(para);
    const tools = el("div", null, "pg-buttons");
    [["JSON", () => download("attribution.json", "application/json", JSON.stringify(r, null, 2))],
     ["CSV", () => download("attribution.csv", "text/csv", toCsv(r))]].forEach(([label, fn]) => {
      const b = el("button", t("Download %(format)s", { format: label }), "small");
      b.type = "button";
      b.addEventListener("click", fn);
      tools.append(b);
    });
    box.append(tools);
  }

  // ---- start ----------------------------------------------------------------------------------------------------
  function load() {
    if (saved) {
      if (saved.deployment && byName[saved.deployment]) $("#pg-deployment").value = saved.deployment;
      if (saved.compare_with) $("#pg-compare").value = saved.compare_with;
      if (saved.mode === "completion") $("#pg-mode").value = "completion";
      state.data = { ...state.data, ...(saved.data || {}) };
      if (saved.share_url) { $("#pg-share-row").hidden = false; $("#pg-share-url").value = saved.share_url; }
    }
    const p = state.data.params || {};
    applyDeployment(false);
    if (saved) {
      if (p.temperature !== undefined && p.temperature !== null) $("#pg-temperature").value = p.temperature;
      if (p.top_p !== undefined && p.top_p !== null) $("#pg-top-p").value = p.top_p;
      if (p.max_tokens !== undefined && p.max_tokens !== null) $("#pg-max-tokens").value = p.max_tokens;
      if (p.seed !== undefined && p.seed !== null) $("#pg-seed").value = p.seed;
      $("#pg-stop").value = p.stop || "";
      $("#pg-system").value = state.data.system || "";
      $("#pg-texts").value = state.data.texts || "";
      $("#pg-text").value = state.data.text || "";
      const e = state.data.explain || {};
      if (e.method) $("#pg-method").value = e.method;
      if (e.span) $("#pg-span").value = e.span;
      $("#pg-words").checked = !!e.words;
      applyDeployment(true);
    }
    state.data.turns.forEach((turn, i) => renderTurn(turn, i));
    renderSimilarity();
    renderPredictions();
    renderTextAttribution();
  }

  $("#pg-deployment").addEventListener("change", () => applyDeployment(false));
  $("#pg-mode").addEventListener("change", () => applyDeployment(true));
  $("#pg-max-tokens").addEventListener("input", explainCapNote);
  $("#pg-send").addEventListener("click", send);
  $("#pg-stop-button").addEventListener("click", stop);
  $("#pg-clear").addEventListener("click", () => { state.data.turns = []; $("#pg-turns").replaceChildren(); save(); });
  $("#pg-input").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(); });
  $("#pg-embed").addEventListener("click", embed);
  $("#pg-predict").addEventListener("click", predict);
  $("#pg-explain-text").addEventListener("click", explainText);
  $("#pg-share").addEventListener("click", () => share(true));
  $("#pg-unshare")?.addEventListener("click", () => share(false));  // only the owner has it
  $("#pg-title").addEventListener("change", () => { if (state.id) save(); });
  $("#pg-copy-session").addEventListener("click", async () => {
    const body = { title: `${saved.title || "Untitled"} (copy)`, mode: saved.mode, deployment: saved.deployment,
                   compare_with: saved.compare_with, data: saved.data };
    const res = await apiCall("/api/playground/sessions/", "POST", body, root);
    if (res.ok) window.location.href = `/playground/${res.data.id}/`;
    else $("#pg-saved").textContent = apiError(res.status, res.text);
  });
  if (readOnly) root.querySelectorAll("input, select, textarea").forEach((n) => {
    if (n.id !== "pg-share-url") n.disabled = true;
  });
  load();
})();
