// weir web UI: show times in the browser's time zone, and follow a run that has not finished.
// Without JavaScript every page still works; a reload shows the newest state.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    if (el.dataset.local) continue;
    const moment = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(moment.getTime())) continue;
    el.title = el.textContent;
    el.textContent = moment.toLocaleString();
    el.dataset.local = "1";
  }
}

function logItem(line) {
  // Built with textContent only: a log message is data, never markup.
  const li = document.createElement("li");
  li.className = "log log-" + line.level;
  const at = document.createElement("time");
  at.setAttribute("datetime", line.at || "");
  at.textContent = line.at || "";
  const level = document.createElement("span");
  level.className = "level";
  level.textContent = line.level;
  const where = document.createElement("span");
  where.className = "where";
  where.textContent = (line.step || "") + (line.item === null || line.item === undefined ? "" : "[" + line.item + "]");
  const msg = document.createElement("span");
  msg.className = "msg";
  msg.textContent = line.message;
  li.append(at, " ", level, " ", where, " ", msg);
  return li;
}

async function refreshRegions() {
  // Fetch this page again and swap the regions marked data-live (status, actions, data, steps).
  const response = await fetch(location.pathname, { credentials: "same-origin" });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const el of document.querySelectorAll("[data-live][id]")) {
    const replacement = fresh.getElementById(el.id);
    if (replacement) el.replaceWith(document.importNode(replacement, true));
  }
  const status = fresh.getElementById("run-status");
  const current = document.getElementById("run-status");
  if (status && current) current.replaceWith(document.importNode(status, true));
  localTimes(document);
}

function followRun(root) {
  const url = root.dataset.runLive;
  let after = Number(root.dataset.after) || 0;
  let state = root.dataset.state;
  const logs = document.getElementById("logs");
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function poll() {
    for (;;) {
      let data;
      try {
        const response = await fetch(url + "?after=" + after, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.status === 401 || response.status === 404) break;
        if (!response.ok) throw new Error("HTTP " + response.status);
        data = await response.json();
      } catch (err) {
        await wait(3000);
        continue;
      }
      if (data.logs.length) {
        const empty = document.getElementById("logs-empty");
        if (empty) empty.remove();
        const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 8;
        for (const line of data.logs) {
          logs.append(logItem(line));
          after = Math.max(after, line.id);
        }
        localTimes(logs);
        if (atBottom) logs.scrollTop = logs.scrollHeight;
      }
      const statusEl = document.getElementById("run-status");
      if (statusEl && statusEl.textContent !== data.status) {
        statusEl.textContent = data.status;
        statusEl.className = "status status-" + data.status;
      }
      if (data.state !== state) {
        state = data.state;
        try { await refreshRegions(); } catch (err) { /* the next change tries again */ }
      }
      if (data.finished && data.logs.length < 1000) break;
      await wait(data.logs.length >= 1000 ? 0 : 1000);
    }
    const indicator = document.getElementById("live-indicator");
    if (indicator) indicator.remove();
    root.removeAttribute("data-run-live");
  }
  poll();
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const run = document.querySelector("[data-run-live]");
  if (run) followRun(run);
});
