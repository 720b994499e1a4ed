// imagescope web UI: plain JavaScript, no dependencies, works offline.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const STAGE_LABELS = {
    reason: "Reason",
    retrieve: "Retrieve",
    verify: "Verify",
    evaluate: "Evaluate",
    ask: "Ask back",
  };
  const STAGE_ORDER = ["reason", "retrieve", "verify", "evaluate", "ask"];
  const MODES = ["text", "composed", "chat"];
  const reducedMotion = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;

  const state = {
    mode: "text",
    token: sessionStorage.getItem("imagescope-token") || "",
    info: null,
    refName: "",
    refFile: null,
    refURL: "",
    turns: [], // chat: earlier turns (texts), oldest first
    chatReplies: [], // chat: one reply per turn {top, thumb, desc}
    conversation: "", // chat: the server's id for the kept state
    asked: null, // chat: the question the engine asks back (result.ask)
    // Each mode keeps its own query and results.
    modes: { text: { q: "", result: null }, composed: { q: "", result: null }, chat: { q: "", result: null } },
    hits: [],
    result: null,
    detailIndex: -1,
    abort: null,
    blobURLs: [],
    pickerOffset: 0,
  };

  // ---------- helpers ----------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = v;
        else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : v);
      }
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function authHeaders(extra) {
    const h = Object.assign({}, extra || {});
    if (state.token) h["Authorization"] = "Bearer " + state.token;
    return h;
  }

  async function api(path, opts) {
    opts = opts || {};
    opts.headers = authHeaders(opts.headers);
    const resp = await fetch(path, opts);
    if (resp.status === 401) {
      askToken();
      throw new Error("an access token is needed");
    }
    return resp;
  }

  async function errorText(resp) {
    try {
      const j = await resp.json();
      if (j && j.error) return j.error;
    } catch (e) { /* not JSON */ }
    return resp.status + " " + resp.statusText;
  }

  // setImage shows a protected image: with a token, images are fetched with
  // the Authorization header and shown from blob URLs.
  function setImage(img, url) {
    if (!state.token) {
      img.src = url;
      return;
    }
    fetch(url, { headers: authHeaders() })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.status))))
      .then((b) => {
        const u = URL.createObjectURL(b);
        state.blobURLs.push(u);
        img.src = u;
      })
      .catch(() => { img.alt = img.alt || "image unavailable"; });
  }

  function releaseBlobs() {
    for (const u of state.blobURLs) URL.revokeObjectURL(u);
    state.blobURLs = [];
  }

  function setStatus(text, isError) {
    const s = $("status");
    s.textContent = text || "";
    s.classList.toggle("error", !!isError);
  }

  function fmtScore(v) {
    return typeof v === "number" ? v.toFixed(4) : "";
  }

  // ---------- auth ----------
  function askToken() {
    const d = $("auth");
    if (!d.open) d.showModal();
    $("auth-token").focus();
  }
  $("auth-form").addEventListener("submit", () => {
    state.token = $("auth-token").value.trim();
    sessionStorage.setItem("imagescope-token", state.token);
    loadInfo();
  });

  // ---------- modes ----------
  const tabs = Array.from(document.querySelectorAll("[role=tab]"));
  function setMode(mode, focus) {
    if (mode !== state.mode) {
      state.modes[state.mode].q = $("q").value;
      state.modes[state.mode].result = state.result;
      if (state.abort) state.abort.abort();
    }
    const changed = mode !== state.mode;
    state.mode = mode;
    for (const t of tabs) {
      const on = t.dataset.mode === mode;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      if (on && focus) t.focus();
    }
    $("ref-panel").hidden = mode !== "composed";
    $("chat-panel").hidden = mode !== "chat";
    const q = $("q");
    if (mode === "text") {
      $("q-label").textContent = "What are you looking for?";
      q.placeholder = "a dog running on a beach at sunset";
    } else if (mode === "composed") {
      $("q-label").textContent = "What should be different? (leave empty for more like this)";
      q.placeholder = "make it night time and add a second dog";
    } else {
      $("q-label").textContent = state.turns.length ? "Refine: answer or add a detail" : "Describe the picture you have in mind";
      q.placeholder = state.turns.length ? "is it indoors? yes, in a kitchen" : "a person holding an umbrella in the rain";
    }
    if (changed) {
      q.value = state.modes[mode].q;
      const res = state.modes[mode].result;
      resetStages();
      if (res) {
        showStages(res);
        renderResult(res);
      } else {
        clearResults();
      }
      setStatus("");
    }
  }
  for (const t of tabs) {
    t.addEventListener("click", () => { setMode(t.dataset.mode, true); pushURL(); });
    t.addEventListener("keydown", (ev) => {
      const i = tabs.indexOf(t);
      let j = -1;
      if (ev.key === "ArrowRight") j = (i + 1) % tabs.length;
      if (ev.key === "ArrowLeft") j = (i - 1 + tabs.length) % tabs.length;
      if (ev.key === "Home") j = 0;
      if (ev.key === "End") j = tabs.length - 1;
      if (j >= 0) {
        ev.preventDefault();
        setMode(tabs[j].dataset.mode, true);
      }
    });
  }

  // ---------- reference image ----------
  function showRef(label, url, isBlob) {
    const img = $("ref-img");
    if (url) {
      if (isBlob) img.src = url;
      else setImage(img, url);
      img.hidden = false;
      img.alt = "Reference: " + label;
    } else {
      img.hidden = true;
      img.removeAttribute("src");
    }
    $("ref-label").textContent = label || "No reference image yet: upload, paste or drop one.";
    $("ref-clear").hidden = !url;
    $("ref-similar").hidden = !url;
  }
  function clearRef() {
    if (state.refURL) URL.revokeObjectURL(state.refURL);
    state.refName = "";
    state.refFile = null;
    state.refURL = "";
    $("ref-file").value = "";
    showRef("", "");
  }
  // setRefFile takes an uploaded, pasted or dropped image as the reference.
  function setRefFile(f, how) {
    if (!f) return false;
    if (!/^image\//.test(f.type)) {
      setStatus("That is not an image (" + (f.type || "unknown type") + ").", true);
      return false;
    }
    const max = state.info ? state.info.limits.max_upload_bytes : 0;
    if (max && f.size > max) {
      setStatus("That file is " + Math.round(f.size / 1048576) + " MB; the server accepts up to " + Math.round(max / 1048576) + " MB.", true);
      return false;
    }
    clearRef();
    state.refFile = f;
    state.refURL = URL.createObjectURL(f);
    if (state.mode !== "composed") setMode("composed", false);
    showRef(how + ": " + (f.name || "image"), state.refURL, true);
    setStatus("Reference image set. Say what to change, or choose More like this.");
    return true;
  }
  $("ref-file").addEventListener("change", () => setRefFile($("ref-file").files[0], "Uploaded"));
  $("ref-clear").addEventListener("click", clearRef);
  $("ref-similar").addEventListener("click", () => {
    $("q").value = "";
    submit();
  });
  function useReference(name, thumbURL) {
    clearRef();
    state.refName = name;
    if (state.mode !== "composed") setMode("composed", false);
    showRef("Gallery: " + name, thumbURL);
  }
  // moreLikeThis searches for images like a gallery image (no text).
  function moreLikeThis(name, thumbURL) {
    useReference(name, thumbURL);
    $("q").value = "";
    submit();
  }

  // Paste and drag-and-drop: an image anywhere on the page becomes the
  // reference image.
  function imageFrom(dt) {
    if (!dt) return null;
    for (const it of Array.from(dt.items || [])) {
      if (it.kind === "file" && /^image\//.test(it.type)) return it.getAsFile();
    }
    for (const f of Array.from(dt.files || [])) {
      if (/^image\//.test(f.type)) return f;
    }
    return null;
  }
  document.addEventListener("paste", (ev) => {
    const f = imageFrom(ev.clipboardData);
    if (!f) return; // plain text pastes go where they were aimed
    ev.preventDefault();
    setRefFile(f, "Pasted");
  });
  let dragDepth = 0;
  document.addEventListener("dragenter", (ev) => {
    if (!ev.dataTransfer || !Array.from(ev.dataTransfer.types || []).includes("Files")) return;
    dragDepth++;
    $("drop-hint").hidden = false;
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) $("drop-hint").hidden = true;
  });
  document.addEventListener("dragover", (ev) => {
    if (ev.dataTransfer && Array.from(ev.dataTransfer.types || []).includes("Files")) ev.preventDefault();
  });
  document.addEventListener("drop", (ev) => {
    dragDepth = 0;
    $("drop-hint").hidden = true;
    const f = imageFrom(ev.dataTransfer);
    if (!f) return;
    ev.preventDefault();
    setRefFile(f, "Dropped");
  });

  // gallery picker
  async function loadPicker(reset) {
    if (reset) {
      state.pickerOffset = 0;
      $("picker-grid").textContent = "";
    }
    const q = $("picker-q").value.trim();
    const params = new URLSearchParams({ q, offset: String(state.pickerOffset), limit: "60" });
    let data;
    try {
      const r = await api("/api/gallery?" + params);
      if (!r.ok) throw new Error(await errorText(r));
      data = await r.json();
    } catch (e) {
      $("picker-status").textContent = "Could not list the gallery: " + e.message;
      return;
    }
    for (const im of data.images) {
      const img = el("img", { alt: "", loading: "lazy", width: "110", height: "82" });
      setImage(img, im.thumb_url + "?size=128");
      const b = el("button", {
        type: "button", class: "card", "data-name": im.name,
        onclick: () => { $("picker").close(); useReference(im.name, im.thumb_url); $("q").focus(); },
      }, el("span", { class: "thumb" }, img), el("span", { class: "meta" }, el("span", { class: "name", text: im.name })));
      $("picker-grid").append(el("li", null, b));
    }
    state.pickerOffset += data.images.length;
    $("picker-status").textContent = state.pickerOffset + " of " + data.total + " images";
    $("picker-more").hidden = state.pickerOffset >= data.total;
  }
  $("ref-pick").addEventListener("click", () => {
    $("picker").showModal();
    $("picker-q").focus();
    loadPicker(true);
  });
  let pickerTimer = 0;
  $("picker-q").addEventListener("input", () => {
    clearTimeout(pickerTimer);
    pickerTimer = setTimeout(() => loadPicker(true), 200);
  });
  $("picker-more").addEventListener("click", () => loadPicker(false));

  // ---------- chat ----------
  function chatReply(r) {
    const li = el("li", { class: "system" });
    if (r.top) {
      const img = el("img", { alt: "Best match: " + r.top, width: "64", height: "48" });
      setImage(img, r.thumb + "?size=128");
      li.append(el("button", { type: "button", class: "chat-thumb", title: "Show " + r.top, onclick: () => {
        const i = state.hits.findIndex((h) => h.name === r.top);
        if (i >= 0) openDetail(i);
      } }, img));
    }
    li.append(el("span", null,
      r.top ? "Best match now: " + r.top + ". " : "No match yet. ",
      r.desc ? el("span", { class: "muted" }, "Looking for: " + r.desc) : ""));
    return li;
  }
  function renderChat(pending) {
    const log = $("chat-log");
    log.textContent = "";
    state.turns.forEach((t, i) => {
      log.append(el("li", { class: "user" }, t));
      const r = state.chatReplies[i];
      if (r) log.append(chatReply(r));
    });
    if (pending) log.append(el("li", { class: "user" }, pending), el("li", { class: "system muted" }, "…"));
    else if (state.asked) log.append(askItem(state.asked));
    $("chat-reset").hidden = state.turns.length === 0;
    log.scrollTop = log.scrollHeight;
  }

  // A question asked back, with quick answers in the user's language;
  // typing a turn of one's own ignores it.
  function turnOf(question, answer) {
    return question.replace(/[?？\s]+$/, "") + "? " + answer;
  }
  function askItem(a) {
    const answer = (word) => {
      $("q").value = turnOf(a.question, word);
      submit();
    };
    const cand = a.candidates[a.chosen] || {};
    const why = a.rule === "verifier-split" && cand.answered
      ? "splits the top " + a.probed + " candidates: yes on " + cand.yes + " of " + cand.answered
      : "";
    return el("li", { class: "system asked" },
      el("span", { class: "asked-label" }, "Question for you: "),
      el("strong", { class: "asked-question" }, a.question),
      el("div", { class: "asked-actions" },
        el("button", { type: "button", class: "ask-yes", onclick: () => answer(a.yes || "yes") }, a.yes || "yes"),
        el("button", { type: "button", class: "ask-no", onclick: () => answer(a.no || "no") }, a.no || "no"),
        el("button", { type: "button", class: "ask-words", onclick: () => {
          $("q").value = turnOf(a.question, "");
          $("q").focus();
        } }, "Answer in words…")),
      why ? el("div", { class: "muted" }, why + " · or type anything to go your own way") : "");
  }
  $("chat-reset").addEventListener("click", () => {
    state.turns = [];
    state.chatReplies = [];
    state.conversation = "";
    state.asked = null;
    state.modes.chat.result = null;
    renderChat();
    clearResults();
    setMode("chat", false);
    pushURL();
    $("q").focus();
  });

  // ---------- stages / progress ----------
  function stageItem(name) {
    let li = document.querySelector('#stages li[data-stage="' + name + '"]');
    if (!li) {
      li = el("li", { class: "stage pending", "data-stage": name },
        el("span", { class: "icon", "aria-hidden": "true" }),
        el("span", { class: "label", text: STAGE_LABELS[name] || name }),
        el("span", { class: "why" }));
      $("stages").append(li);
      const items = Array.from($("stages").children);
      items.sort((a, b) => STAGE_ORDER.indexOf(a.dataset.stage) - STAGE_ORDER.indexOf(b.dataset.stage));
      for (const it of items) $("stages").append(it);
    }
    return li;
  }
  function setStage(name, status, why) {
    const li = stageItem(name);
    li.className = "stage " + status;
    li.dataset.status = status;
    li.querySelector(".why").textContent = why ? "— " + why : "";
    const word = { pending: "waiting", running: "running", done: "done", skipped: "skipped", failed: "failed" }[status] || status;
    li.setAttribute("aria-label", (STAGE_LABELS[name] || name) + ": " + word + (why ? ", " + why : ""));
  }
  function resetStages() {
    $("stages").textContent = "";
    const stages = (state.info && state.info.stages) || [];
    for (const st of stages) {
      if (st.configured) setStage(st.name, "pending", "");
      else setStage(st.name, "skipped", st.reason || "not configured");
    }
  }

  function showStages(result) {
    for (const st of result.stages) {
      setStage(st.name, st.status === "pending" ? "running" : st.status,
        st.status === "done" ? (st.duration_ms > 0 ? Math.round(st.duration_ms) + " ms" : "") : st.reason || "");
    }
  }

  // ---------- URL state ----------
  // The query lives in the URL (?m=mode&q=text&ref=name&t=turn...), so a
  // reload, Back and a shared link restore it.
  function urlParams(text) {
    const p = new URLSearchParams();
    if (state.mode !== "text") p.set("m", state.mode);
    if (state.mode === "chat") {
      for (const t of state.turns) p.append("t", t);
      if (text) p.append("t", text);
    } else if (text) {
      p.set("q", text);
    }
    if (state.mode === "composed" && state.refName) p.set("ref", state.refName);
    return p;
  }
  function pushURL(text) {
    const p = urlParams(text === undefined ? "" : text).toString();
    const want = location.pathname + (p ? "?" + p : "");
    if (want !== location.pathname + location.search) history.pushState(null, "", want);
  }
  function restoreURL() {
    const p = new URLSearchParams(location.search);
    const mode = MODES.includes(p.get("m")) ? p.get("m") : "text";
    if (state.abort) state.abort.abort();
    setMode(mode, false);
    let text = p.get("q") || "";
    if (mode === "chat") {
      const turns = p.getAll("t");
      text = turns.pop() || "";
      if (turns.join("\n") !== state.turns.join("\n")) {
        state.turns = turns;
        state.chatReplies = [];
        state.conversation = "";
        state.asked = null;
      }
      renderChat();
      setMode("chat", false);
    }
    if (mode === "composed") {
      const ref = p.get("ref") || "";
      if (ref && ref !== state.refName) useReference(ref, "/api/thumbs/" + ref.split("/").map(encodeURIComponent).join("/"));
      if (!ref && state.refName) clearRef();
    }
    const runnable = mode === "composed" ? !!(text || state.refName) : !!text;
    if (runnable) {
      $("q").value = text;
      submit({ fromURL: true });
    }
  }
  window.addEventListener("popstate", restoreURL);

  // ---------- search ----------
  function stageOptions() {
    const o = {};
    if (!$("opt-reason").checked) o.reason = false;
    if (!$("opt-verify").checked) o.verify = false;
    if (!$("opt-evaluate").checked) o.evaluate = false;
    const k = parseInt($("opt-k").value, 10);
    if (k > 0) o.top_k = k;
    return o;
  }

  function buildBody(text) {
    const req = { text, stages: stageOptions() };
    const limit = parseInt($("opt-limit").value, 10);
    if (limit > 0) req.limit = limit;
    if (state.mode === "chat") {
      req.chat = true;
      if (state.turns.length) req.dialogue = state.turns.slice();
      if (state.conversation) req.conversation = state.conversation;
      if (state.info && state.info.ask && state.info.ask.configured) req.ask = true;
    }
    if (state.mode === "composed") {
      if (state.refFile) {
        const fd = new FormData();
        fd.append("request", JSON.stringify(req));
        fd.append("image", state.refFile, state.refFile.name || "image");
        return { body: fd, headers: {} };
      }
      if (state.refName) req.reference = state.refName;
    }
    return { body: JSON.stringify(req), headers: { "Content-Type": "application/json" } };
  }

  // parseSSE feeds chunks of an event stream and calls onEvent(name, data).
  function sseParser(onEvent) {
    let buf = "";
    return (chunk) => {
      buf += chunk;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) {
          let v;
          try { v = JSON.parse(data.join("\n")); } catch (e) { v = data.join("\n"); }
          onEvent(name, v);
        }
      }
    };
  }

  function busy(on) {
    $("go").disabled = on;
    $("stop").hidden = !on;
    document.body.setAttribute("aria-busy", on ? "true" : "false");
  }

  function refining(res) {
    const next = { retrieve: "verifying the top candidates", verify: "judging the top few" }[res.partial] || "refining";
    $("refining").textContent = "First results — " + next + "; they will re-order in place.";
  }

  // showDegraded explains a partial answer: which stage did without which
  // model role, and why.
  function showDegraded(list) {
    const box = $("degraded");
    box.textContent = "";
    box.hidden = !list || !list.length;
    if (box.hidden) return;
    box.append(el("strong", null, "Partial answer: a model is unavailable, so part of the search was skipped."),
      el("ul", null, list.map((d) => el("li", null,
        (STAGE_LABELS[d.stage] || d.stage) + (d.round >= 0 ? " (round " + (d.round + 1) + ")" : "") + ": " + d.reason))));
  }

  async function runSearch(text) {
    if (state.abort) state.abort.abort();
    showDegraded(null);
    const ctl = new AbortController();
    state.abort = ctl;
    const mode = state.mode;
    resetStages();
    busy(true);
    setStatus("Searching…");
    const started = performance.now();
    const { body, headers } = buildBody(text);
    let result = null;
    let failure = "";
    let stopped = false;
    try {
      const resp = await api("/api/search/stream", { method: "POST", body, headers, signal: ctl.signal });
      if (!resp.ok) throw new Error(await errorText(resp));
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      const feed = sseParser((name, data) => {
        if (state.abort !== ctl) return;
        if (name === "stage") {
          const st = data.status === "started" ? "running" : data.status;
          setStage(data.stage, st, data.status === "skipped" ? data.reason : (data.detail || data.reason || ""));
          if (data.status === "started") setStatus((STAGE_LABELS[data.stage] || data.stage) + "…");
        } else if (name === "partial") {
          renderResult(data);
          refining(data);
          const secs = ((performance.now() - started) / 1000).toFixed(1);
          setStatus(data.results.length + " first results in " + secs + " s; refining…");
        } else if (name === "result") {
          result = data;
        } else if (name === "error") {
          failure = data.error || "search failed";
        }
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        feed(value);
      }
    } catch (e) {
      if (e.name === "AbortError") {
        failure = "Stopped.";
        stopped = true;
      } else failure = e.message;
    } finally {
      if (state.abort === ctl) {
        busy(false);
        state.abort = null;
      }
    }
    if (state.mode !== mode) return null; // switched away meanwhile
    if (!result) {
      // An error never stands above results that do not belong to it (a
      // search stopped by hand, or replaced by a newer one, keeps them).
      if (!stopped && !state.abort) clearResults();
      setStatus(failure || "The search ended without a result.", true);
      $("refining").hidden = true;
      $("results").classList.remove("refining");
      for (const li of document.querySelectorAll("#stages li.running")) setStage(li.dataset.stage, "failed", "");
      return null;
    }
    showStages(result);
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(result.results.length + " results in " + secs + " s.");
    showDegraded(result.degraded);
    renderResult(result);
    return result;
  }

  $("stop").addEventListener("click", () => { if (state.abort) state.abort.abort(); });

  async function submit(opts) {
    opts = opts || {};
    const text = $("q").value.trim();
    if (state.mode === "composed" && !state.refName && !state.refFile) {
      setStatus("Pick a reference image (upload, paste or drop one, or choose from the gallery) first.", true);
      $("ref-pick").focus();
      return;
    }
    if (!text && state.mode !== "composed") {
      setStatus("Type what you are looking for first.", true);
      $("q").focus();
      return;
    }
    if (!opts.fromURL) pushURL(text);
    if (state.mode === "chat") {
      state.asked = null;
      renderChat(text);
    }
    const res = await runSearch(text);
    if (state.mode === "chat" && res) {
      state.turns.push(text);
      state.conversation = res.conversation || "";
      const top = res.results[0];
      state.chatReplies.push({ top: top ? top.name : "", thumb: top ? top.thumb_url : "", desc: res.descriptions[0] || "" });
      state.asked = res.ask && res.ask.question ? res.ask : null;
      renderChat();
      $("q").value = "";
      setMode("chat", false);
    } else if (state.mode === "chat") {
      renderChat();
    }
  }
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit();
  });

  // ---------- results ----------
  function verifBadge(h) {
    const v = h.verification;
    if (!v || !v.answers || !v.answers.length) return null;
    const n = v.answers.filter((a) => a.match).length;
    return el("span", { class: "badge " + (n === v.answers.length ? "yes" : ""), title: "propositions matched" }, "✓ " + n + "/" + v.answers.length);
  }
  function verdictBadge(h) {
    if (!h.verdict) return null;
    return el("span", { class: "badge " + (h.verdict.yes ? "yes" : "no") }, h.verdict.yes ? "judged: yes" : "judged: no");
  }
  function firstRank(h) {
    return h.ranks && h.ranks.length ? h.ranks[0].rank : h.stage1_rank;
  }

  function clearResults() {
    releaseBlobs();
    state.result = null;
    state.hits = [];
    $("results").textContent = "";
    $("results").classList.remove("refining");
    $("refining").hidden = true;
    $("summary").hidden = true;
  }

  // renderResult shows a result; cards already on screen are kept and
  // slide to their new place (first results refined in place).
  function renderResult(res) {
    state.result = res;
    state.hits = res.results;
    state.modes[state.mode].result = res;
    const grid = $("results");
    const old = new Map();
    const before = new Map();
    for (const li of Array.from(grid.children)) {
      old.set(li.dataset.name, { li });
      before.set(li, li.getBoundingClientRect());
    }
    const items = res.results.map((h, i) => {
      const prev = old.get(h.name);
      const li = prev ? prev.li : el("li", { class: "result", "data-name": h.name });
      old.delete(h.name);
      let img = prev && li.querySelector("img");
      if (!img) {
        img = el("img", { alt: "", width: "170", height: "128", decoding: "async" });
        setImage(img, h.thumb_url);
      }
      const r1 = firstRank(h);
      const moved = r1 && r1 !== h.rank ? el("span", { class: "moved " + (r1 > h.rank ? "up" : "down") }, r1 > h.rank ? " ▲ was " + r1 : " ▼ was " + r1) : "";
      const card = el("button", {
        type: "button", class: "card", "data-name": h.name,
        "aria-label": "Result " + h.rank + ": " + h.name + ". Open details.",
        onclick: () => openDetail(state.hits.findIndex((x) => x.name === h.name)),
      },
      el("span", { class: "thumb" }, img),
      el("span", { class: "meta" },
        el("span", { class: "name", text: h.name }),
        el("span", { class: "rank" }, "#" + h.rank, moved),
        el("span", { class: "badges" }, verifBadge(h), verdictBadge(h))));
      const similar = el("button", { type: "button", class: "similar", "aria-label": "More like " + h.name, onclick: () => moreLikeThis(h.name, h.thumb_url) }, "More like this");
      li.textContent = "";
      li.append(card, similar);
      return li;
    });
    for (const { li } of old.values()) li.remove();
    for (const li of items) grid.append(li);
    animateMoves(items, before);
    grid.classList.toggle("refining", !!res.partial);
    $("refining").hidden = !res.partial;
    renderSummary(res);
  }

  // animateMoves slides each kept card from where it was (FLIP) and marks
  // it for a moment, so a re-ordering is seen, not just a jump.
  function animateMoves(items, before) {
    items.forEach((li) => {
      const was = before.get(li);
      if (!was) return;
      const now = li.getBoundingClientRect();
      const dx = was.left - now.left;
      const dy = was.top - now.top;
      if (!dx && !dy) return;
      li.dataset.moved = "1";
      if (reducedMotion) return;
      li.animate([{ transform: "translate(" + dx + "px," + dy + "px)" }, { transform: "none" }],
        { duration: 350, easing: "ease-out" });
      li.classList.add("moved-now");
      setTimeout(() => li.classList.remove("moved-now"), 900);
    });
  }

  function renderSummary(res) {
    const body = $("summary-body");
    body.textContent = "";
    const hint = [];
    if (res.descriptions && res.descriptions.length) {
      body.append(el("h3", null, "Target descriptions"),
        el("ol", { class: "descriptions" }, res.descriptions.map((d) => el("li", null, d))));
      hint.push(res.descriptions.length === 1 ? "1 description" : res.descriptions.length + " descriptions");
    }
    if (res.instructions && res.instructions.length) {
      body.append(el("h3", null, "Atomic instructions"),
        el("ul", null, res.instructions.map((p) => el("li", null, el("strong", null, p[0] + ": "), p[1]))));
    }
    if (res.propositions && res.propositions.length) {
      body.append(el("h3", null, "Propositions checked"),
        el("ul", { class: "propositions" }, res.propositions.map((p) => el("li", null, p.question + " — expected " + (p.expected ? "yes" : "no")))));
      hint.push(res.propositions.length === 1 ? "1 proposition" : res.propositions.length + " propositions");
    }
    const skipped = res.stages.filter((s) => s.status !== "done" && s.status !== "pending");
    if (skipped.length) {
      body.append(el("h3", null, "Stages not run"),
        el("ul", null, skipped.map((s) => el("li", { class: "skipped" }, (STAGE_LABELS[s.name] || s.name) + " " + s.status + (s.reason ? ": " + s.reason : "")))));
    }
    if (res.notes && res.notes.length) {
      body.append(el("h3", null, "Notes"), el("ul", null, res.notes.map((n) => el("li", null, n))));
    }
    $("summary-hint").textContent = hint.join(" · ");
    $("summary").hidden = body.childElementCount === 0;
  }

  function stageStatus(name) {
    const st = state.result && state.result.stages.find((s) => s.name === name);
    return st || null;
  }

  function explainHit(h) {
    const box = el("div");
    box.append(el("h3", null, "Why it is #" + h.rank));
    if (h.ranks && h.ranks.length) {
      box.append(el("ol", { class: "ranks" }, h.ranks.map((r) =>
        el("li", null, el("strong", null, (STAGE_LABELS[r.stage] || r.stage) + ": #" + r.rank), " — " + r.why))));
    } else {
      box.append(el("p", null, "Rank after retrieval " + (h.stage1_rank || h.rank) + "; similarity " + fmtScore(h.score) + "."));
    }
    if (state.result && state.result.partial) box.append(el("p", { class: "muted" }, "Later stages are still running; this may change."));
    box.append(el("h3", null, "This image"));
    const facts = el("dl", { class: "facts" });
    facts.append(el("dt", null, "Caption"), el("dd", null, h.caption || "none stored"));
    if (typeof h.caption_similarity === "number") facts.append(el("dt", null, "Image vs caption"), el("dd", null, "similarity " + fmtScore(h.caption_similarity)));
    facts.append(el("dt", null, "Query similarity"), el("dd", null, fmtScore(h.score) + " (stage 1, fused)"));
    box.append(facts);
    box.append(el("h3", null, "Verifier"));
    const v = h.verification;
    if (v && v.answers && v.answers.length) {
      const rows = v.answers.map((a) => el("tr", null,
        el("td", null, a.question),
        el("td", null, a.expected ? "yes" : "no"),
        el("td", null, a.error ? "error" : (a.answer ? "yes" : "no") + (typeof a.p_yes === "number" ? " (p=" + a.p_yes.toFixed(2) + ")" : "")),
        el("td", { class: a.match ? "ok" : "bad", "aria-label": a.match ? "matches" : "does not match" }, a.match ? "✓" : "✗")));
      box.append(el("table", { class: "answers" },
        el("thead", null, el("tr", null, el("th", null, "Proposition"), el("th", null, "Expected"), el("th", null, "Verifier said"), el("th", null, ""))),
        el("tbody", null, rows)),
      el("p", null, "Score " + v.score + " of " + v.answers.length + "."));
      if (v.error) box.append(el("p", { class: "skipped" }, "Verification error: " + v.error));
    } else {
      const st = stageStatus("verify");
      let why = "not verified (below the verified top K)";
      if (st && st.status === "pending") why = "not verified yet";
      else if (st && st.status !== "done") why = "stage " + st.status + (st.reason ? ": " + st.reason : "");
      if (v && v.error) why = "verification failed: " + v.error;
      box.append(el("p", { class: "skipped" }, why));
    }
    box.append(el("h3", null, "Evaluator"));
    if (h.verdict) {
      const reasoning = h.verdict.error || h.verdict.reasoning || "";
      box.append(el("div", { class: "verdict " + (h.verdict.yes ? "yes" : "no") },
        el("strong", null, h.verdict.yes ? "Judged yes" : "Judged no"),
        reasoning ? el("span", null, ": " + reasoning) : "."));
    } else {
      const st = stageStatus("evaluate");
      let why = "not judged (only the top few are, until one is accepted)";
      if (st && st.status === "pending") why = "not judged yet";
      else if (st && st.status !== "done") why = "stage " + st.status + (st.reason ? ": " + st.reason : "");
      box.append(el("p", { class: "skipped" }, why));
    }
    return box;
  }

  function openDetail(i) {
    const h = state.hits[i];
    if (!h) return;
    state.detailIndex = i;
    const img = $("detail-img");
    img.alt = h.name;
    img.removeAttribute("src");
    setImage(img, h.image_url);
    $("detail-title").textContent = "#" + h.rank + " · " + h.name;
    const ex = $("detail-explain");
    ex.textContent = "";
    ex.append(explainHit(h));
    $("detail-open").href = h.image_url;
    $("detail-open").hidden = !!state.token;
    $("detail-prev").disabled = i === 0;
    $("detail-next").disabled = i === state.hits.length - 1;
    const d = $("detail");
    if (!d.open) d.showModal();
  }
  $("detail-prev").addEventListener("click", () => openDetail(state.detailIndex - 1));
  $("detail-next").addEventListener("click", () => openDetail(state.detailIndex + 1));
  $("detail").addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowLeft" && state.detailIndex > 0) openDetail(state.detailIndex - 1);
    if (ev.key === "ArrowRight" && state.detailIndex < state.hits.length - 1) openDetail(state.detailIndex + 1);
  });
  $("detail").addEventListener("close", () => {
    const card = document.querySelectorAll("#results button.card")[state.detailIndex];
    if (card) card.focus();
  });
  $("detail-use").addEventListener("click", () => {
    const h = state.hits[state.detailIndex];
    if (!h) return;
    $("detail").close();
    useReference(h.name, h.thumb_url);
    $("q").value = "";
    $("q").focus();
  });
  $("detail-similar").addEventListener("click", () => {
    const h = state.hits[state.detailIndex];
    if (!h) return;
    $("detail").close();
    moreLikeThis(h.name, h.thumb_url);
  });

  // ---------- start ----------
  async function loadInfo() {
    try {
      const r = await api("/api/info");
      if (!r.ok) throw new Error(await errorText(r));
      state.info = await r.json();
      $("desc").textContent = (state.info.description ? state.info.description + " · " : "") + state.info.images + " images";
      resetStages();
      setStatus("");
      return true;
    } catch (e) {
      setStatus("Cannot reach the server: " + e.message, true);
      return false;
    }
  }
  setMode("text", false);
  loadInfo().then((ok) => { if (ok) restoreURL(); });
})();
