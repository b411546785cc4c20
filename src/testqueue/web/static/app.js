// The dashboard's script. Every page works without it; with it, forms submit in
// place, times tick, and the queue and execution pages follow the server's
// Server-Sent Events, patching only the parts that changed (no reload, no flicker).
"use strict";

(() => {
  // Server time minus browser time, so elapsed and waited times agree with the server.
  let clockSkewMs = 0;

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  function span(seconds) {
    if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "-";
    if (seconds < 10) return `${Math.max(0, seconds).toFixed(1)} s`;
    const whole = Math.round(seconds);
    if (whole < 60) return `${whole} s`;
    if (whole < 3600) return `${Math.floor(whole / 60)} m ${String(whole % 60).padStart(2, "0")} s`;
    return `${Math.floor(whole / 3600)} h ${String(Math.floor((whole % 3600) / 60)).padStart(2, "0")} m`;
  }

  const serverNow = () => Date.now() + clockSkewMs;

  function secondsSince(iso) {
    const at = Date.parse(iso);
    return Number.isNaN(at) ? null : Math.max(0, (serverNow() - at) / 1000);
  }

  function untilText(iso) {
    if (!iso) return "unknown";
    const left = (Date.parse(iso) - serverNow()) / 1000;
    if (left <= 1) return "any moment";
    const local = new Date(Date.parse(iso) - clockSkewMs);
    const clock = local.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return `in ${span(left)} (${clock})`;
  }

  // ---- messages -------------------------------------------------------------

  function say(kind, text) {
    const notice = $("#notice");
    const problem = $("#problem");
    if (!notice || !problem) return;
    const shown = kind === "problem" ? problem : notice;
    const other = kind === "problem" ? notice : problem;
    other.hidden = true;
    shown.textContent = text;
    shown.hidden = false;
  }

  // ---- forms submitted in place ---------------------------------------------

  async function submitInPlace(form, submitter) {
    const buttons = $$("button", form);
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form, submitter || undefined),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (response.status === 401) {
        window.location.assign(`/signin?next=${encodeURIComponent(window.location.pathname)}`);
        return;
      }
      const data = await response.json().catch(() => ({}));
      if (response.ok) {
        say("notice", data.message || "Done.");
      } else {
        const detail = typeof data.detail === "string" ? data.detail : `The server said ${response.status}.`;
        say("problem", detail);
      }
    } catch (error) {
      say("problem", "The server could not be reached. Try again.");
    } finally {
      buttons.forEach((b) => { b.disabled = b.dataset.keepDisabled === "true"; });
      const dialog = form.closest("dialog");
      if (dialog && form.hasAttribute("data-closes-dialog")) dialog.close();
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-fetch")) return;
    event.preventDefault();
    submitInPlace(form, event.submitter);
  });

  document.addEventListener("click", (event) => {
    const opener = event.target.closest("[data-open-dialog]");
    if (opener) {
      const dialog = document.getElementById(opener.dataset.openDialog);
      if (dialog && typeof dialog.showModal === "function") {
        event.preventDefault();
        dialog.showModal();
      }
      return;
    }
    const closer = event.target.closest("[data-close-dialog]");
    if (closer) closer.closest("dialog")?.close();
  });

  // ---- times that tick ------------------------------------------------------

  function localTimes(root = document) {
    $$("time[datetime]", root).forEach((el) => {
      const at = Date.parse(el.getAttribute("datetime"));
      if (!Number.isNaN(at)) {
        el.textContent = new Date(at).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });
        el.title = el.getAttribute("datetime");
      }
    });
  }

  function tick() {
    $$("[data-since]").forEach((el) => {
      const seconds = secondsSince(el.dataset.since);
      if (seconds === null) return;
      el.textContent = span(seconds);
      const progress = el.closest("tr")?.querySelector("progress[data-field=progress]");
      if (progress && el.dataset.field === "elapsed") progress.value = Math.min(seconds, progress.max);
    });
    $$("[data-at]").forEach((el) => { el.textContent = untilText(el.dataset.at); });
  }

  // ---- live streams ---------------------------------------------------------

  function follow(url, handlers) {
    const live = $("#live");
    const text = live ? $("[data-live-text]", live) : null;
    const show = (state, words) => {
      if (!live) return;
      live.dataset.state = state;
      if (text) text.textContent = words;
    };
    const source = new EventSource(url);
    show("connecting", "Connecting…");
    source.addEventListener("open", () => show("on", "Live"));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) show("off", "Not live: reload to update");
      else show("connecting", "Reconnecting…");
    });
    Object.entries(handlers).forEach(([name, handle]) => {
      source.addEventListener(name, (event) => handle(JSON.parse(event.data), source, show));
    });
    window.addEventListener("pagehide", () => source.close());
    return source;
  }

  // ---- the queue board ------------------------------------------------------

  function setField(row, name, apply) {
    $$(`[data-field="${name}"]`, row).forEach(apply);
  }

  function fillCommon(row, item) {
    row.dataset.id = String(item.id);
    row.classList.toggle("mine", item.mine);
    setField(row, "id", (el) => { el.textContent = String(item.id); });
    setField(row, "link", (el) => { el.href = `/executions/${item.id}`; });
    setField(row, "mine", (el) => { el.hidden = !item.mine; });
    setField(row, "title", (el) => { el.textContent = item.title; });
    setField(row, "by", (el) => { el.textContent = item.by; });
    setField(row, "priority", (el) => { el.textContent = String(item.priority); });
    setField(row, "cancel", (el) => {
      el.hidden = !item.can_change;
      el.action = `/executions/${item.id}/cancel`;
    });
  }

  function fillRunning(row, item) {
    fillCommon(row, item);
    setField(row, "elapsed", (el) => { el.dataset.since = item.started_at; });
    setField(row, "timeout", (el) => { el.textContent = span(item.timeout_s); });
    setField(row, "progress", (el) => { el.max = item.timeout_s; });
    setField(row, "stopping", (el) => { el.hidden = !item.stopping; });
  }

  function fillPending(row, item) {
    fillCommon(row, item);
    setField(row, "position", (el) => { el.textContent = String(item.position); });
    setField(row, "waited", (el) => { el.dataset.since = item.queued_at; });
    setField(row, "eta", (el) => { el.dataset.at = item.eta || ""; });
    setField(row, "reason", (el) => { el.textContent = item.reason; });
    setField(row, "aged", (el) => {
      el.textContent = `\u2192 ${item.effective_priority}`;
      el.hidden = item.effective_priority === item.priority;
    });
    setField(row, "movers", (el) => { el.hidden = !item.can_change; });
    const mover = (name, priority, allowed) => setField(row, name, (form) => {
      form.action = `/executions/${item.id}/priority`;
      form.querySelector("input[name=priority]").value = String(priority);
      const button = form.querySelector("button");
      button.disabled = !allowed;
      button.dataset.keepDisabled = String(!allowed);
    });
    mover("raise", item.priority - 1, item.priority > 1);
    mover("lower", item.priority + 1, item.priority < 10);
  }

  // Reuses each row by execution id and moves only rows out of place, so the
  // table never redraws and a focused button stays focused.
  function patchRows(tbody, items, templateId, fill) {
    const template = document.getElementById(templateId);
    const existing = new Map($$(":scope > tr", tbody).map((row) => [row.dataset.id, row]));
    let cursor = tbody.firstElementChild;
    for (const item of items) {
      let row = existing.get(String(item.id));
      if (row) existing.delete(String(item.id));
      else row = template.content.firstElementChild.cloneNode(true);
      fill(row, item);
      if (row === cursor) cursor = cursor.nextElementSibling;
      else tbody.insertBefore(row, cursor);
    }
    for (const row of existing.values()) {
      if (row.contains(document.activeElement)) {
        tbody.closest("section")?.querySelector("h2")?.focus();
      }
      row.remove();
    }
  }

  function setBoard(name, apply) {
    $$(`[data-board="${name}"]`).forEach(apply);
  }

  function showBoard(board) {
    clockSkewMs = Date.parse(board.now) - Date.now();
    setBoard("busy", (el) => { el.textContent = String(board.busy); });
    setBoard("slots", (el) => { el.textContent = String(board.slots); });
    setBoard("pending", (el) => { el.textContent = String(board.pending); });
    setBoard("paused", (el) => { el.hidden = !board.paused; });
    setBoard("more", (el) => { el.textContent = String(board.more); });
    setBoard("more-note", (el) => { el.hidden = board.more === 0; });
    setBoard("pips", (el) => {
      const want = board.slots <= 40 ? board.slots : 0;
      while (el.children.length < want) el.appendChild(Object.assign(document.createElement("span"), { className: "pip" }));
      while (el.children.length > want) el.lastElementChild.remove();
      Array.from(el.children).forEach((pip, i) => pip.classList.toggle("on", i < board.busy));
    });
    $$("[data-board-show=running-queue]").forEach((el) => { el.hidden = board.paused; });
    $$("[data-board-show=paused-queue]").forEach((el) => { el.hidden = !board.paused; });
    const running = $("tbody[data-list=running]");
    const line = $("tbody[data-list=line]");
    if (running) patchRows(running, board.running, "running-row", fillRunning);
    if (line) patchRows(line, board.line, "line-row", fillPending);
    for (const [name, items] of [["running", board.running], ["line", board.line]]) {
      $$(`[data-empty="${name}"]`).forEach((el) => { el.hidden = items.length > 0; });
      $$(`[data-table="${name}"]`).forEach((el) => { el.hidden = items.length === 0; });
    }
    tick();
  }

  // ---- one execution --------------------------------------------------------

  function followExecution(url) {
    const log = $("#log");
    const followBox = $("#log-follow");
    const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 24;
    follow(url, {
      detail: (data) => {
        $$("[data-fragment]").forEach((el) => {
          const html = data[el.dataset.fragment];
          if (typeof html === "string" && el.innerHTML !== html) {
            el.innerHTML = html;
            localTimes(el);
          }
        });
        $$("[data-while-pending]").forEach((el) => { el.hidden = data.status !== "pending"; });
        $$("[data-while-live]").forEach((el) => { el.hidden = !data.live; });
        tick();
      },
      log: (data) => {
        const stick = followBox ? followBox.checked : atBottom();
        if (data.reset) log.textContent = data.text;
        else if (data.text) log.append(data.text);
        if (data.reset) $("#log-clipped").hidden = !data.clipped;
        $("#log-empty").hidden = log.textContent.length > 0;
        if (stick) log.scrollTop = log.scrollHeight;
      },
      end: (_data, source, show) => {
        source.close();
        show("done", "Finished");
      },
    });
    if (log) log.scrollTop = log.scrollHeight;
  }

  // ---- the test case form ---------------------------------------------------

  function runnerFields() {
    const runner = $("#f-runner");
    if (!runner) return;
    const apply = () => {
      $$("[data-runner-only]").forEach((el) => { el.hidden = el.dataset.runnerOnly !== runner.value; });
    };
    runner.addEventListener("change", apply);
    apply();
    $("#error-summary")?.focus();
  }

  // ---- start ----------------------------------------------------------------

  function start() {
    localTimes();
    runnerFields();
    const boardUrl = document.body.dataset.boardStream;
    if (boardUrl) follow(boardUrl, { queue: (board) => showBoard(board) });
    const executionUrl = document.body.dataset.executionStream;
    if (executionUrl) followExecution(executionUrl);
    const batchUrl = document.body.dataset.batchStream;
    if (batchUrl) {
      follow(batchUrl, {
        batch: (data) => {
          const body = $("#batch-body");
          if (body) { body.innerHTML = data.html; localTimes(body); }
        },
        end: (_data, source, show) => { source.close(); show("done", "Finished"); },
      });
    }
    tick();
    window.setInterval(tick, 1000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
