// Bastion Bank: the accounts page. Loaded with the CSP nonce; no inline handlers,
// and server data is only ever written with textContent, never as markup.
"use strict";

(function () {
  const MAX_RECONNECTS = 5;
  const PING_MS = 60000; // below the WebSocket guard's idle timeout
  const MAX_LOG_LINES = 20;
  const status = document.getElementById("feed-status");
  const log = document.getElementById("feed-log");

  function showBalance(update) {
    const cell = document.querySelector('[data-balance-of="' + Number(update.id) + '"]');
    if (cell) cell.textContent = String(update.balance);
    const line = document.createElement("li");
    line.textContent = new Date().toLocaleTimeString() + " " + update.name + ": " + update.balance;
    log.prepend(line);
    while (log.children.length > MAX_LOG_LINES) log.lastElementChild.remove();
  }

  function connect(attempt) {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/feed");
    let pinger = null;
    socket.addEventListener("open", function () {
      status.textContent = "Live: balances update as money moves.";
      attempt = 0;
      pinger = setInterval(function () { socket.send("ping"); }, PING_MS);
    });
    socket.addEventListener("message", function (event) {
      const update = JSON.parse(event.data);
      if (update.type === "balance") showBalance(update);
    });
    socket.addEventListener("close", function () {
      clearInterval(pinger);
      if (attempt >= MAX_RECONNECTS) {
        status.textContent = "The live feed is closed. Reload the page to reconnect.";
        return;
      }
      status.textContent = "Reconnecting…";
      setTimeout(function () { connect(attempt + 1); }, 1000 * 2 ** attempt);
    });
  }

  if (status && log) connect(0);

  const form = document.getElementById("token-form");
  const output = document.getElementById("token-output");
  if (form && output) {
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      const answer = await fetch(form.action, { method: "POST", body: new FormData(form) });
      const body = await answer.json();
      output.hidden = false;
      output.textContent = answer.ok
        ? "Authorization: Bearer " + body.access_token + "\n(expires in " + body.expires_in + " s)"
        : "Refused (" + answer.status + ")";
    });
  }
})();
