// The chat page: send a message on Enter, show the reply, the waiting state and any error.
// Plain DOM, no framework and no build step. Text is only ever set with textContent, so
// nothing a user or the model writes can become markup.
"use strict";

(function () {
  const log = document.getElementById("log");
  const form = document.getElementById("composer");
  const input = document.getElementById("message");
  const send = document.getElementById("send");
  const status = document.getElementById("status");
  const errorBox = document.getElementById("error");
  // Every decoder setting on the page names its API field in data-option.
  const settings = Array.from(document.querySelectorAll("[data-option]"));
  const TIMEOUT_MS = 30000;
  let busy = false;

  function addMessage(who, text, extraClass) {
    const item = document.createElement("li");
    item.className = "msg " + who + (extraClass ? " " + extraClass : "");
    const label = document.createElement("span");
    label.className = "who";
    label.textContent = who === "user" ? "You: " : "Bot: ";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(label, body);
    log.append(item);
    log.scrollTop = log.scrollHeight;
    return item;
  }

  // With n-best above 1 the API returns the runners-up, best first: list them under the
  // reply with their scores (log-probabilities, or MMI scores when reranked).
  function showAlternatives(item, data) {
    const alternatives = data.alternatives || [];
    if (!alternatives.length) return;
    const list = document.createElement("ol");
    list.className = "alternatives";
    list.setAttribute("aria-label", "Other replies, best first");
    for (const alt of [{ text: data.reply, score: data.score }, ...alternatives]) {
      const entry = document.createElement("li");
      const words = document.createElement("span");
      words.textContent = alt.text || "(no reply)";
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = " " + Number(alt.score).toFixed(2);
      entry.append(words, score);
      list.append(entry);
    }
    item.append(list);
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  function setBusy(on) {
    busy = on;
    send.disabled = on;
    form.setAttribute("aria-busy", on ? "true" : "false");
    status.textContent = on ? "Waiting for the reply…" : "";
  }

  // Only settings the user changed are sent; the rest stay the server's defaults.
  function options() {
    const out = {};
    for (const field of settings) {
      if (!field.value) continue;
      if (field.type === "number") out[field.dataset.option] = Number(field.value);
      else if (field.dataset.kind === "boolean") out[field.dataset.option] = field.value === "true";
      else out[field.dataset.option] = field.value;
    }
    return out;
  }

  async function errorMessage(response) {
    try {
      const data = await response.json();
      if (data && typeof data.message === "string") return data.message;
    } catch (ignored) { /* not JSON: fall through */ }
    return "the server answered " + response.status + " " + response.statusText;
  }

  async function ask(text) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      const response = await fetch("/api/reply", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Object.assign({ text: text }, options())),
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      return await response.json();
    } catch (err) {
      if (err.name === "AbortError") throw new Error("no reply within 30 seconds");
      if (err instanceof TypeError) throw new Error("cannot reach the server");
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    const text = input.value.trim();
    if (!text) {
      showError("Type a message first.");
      input.focus();
      return;
    }
    clearError();
    const asked = addMessage("user", text);
    input.value = "";
    const pending = addMessage("bot", "thinking", "waiting");
    pending.setAttribute("aria-busy", "true");
    setBusy(true);
    try {
      const data = await ask(text);
      pending.classList.remove("waiting");
      pending.removeAttribute("aria-busy");
      pending.querySelector(".text").textContent = data.reply || "(no reply)";
      showAlternatives(pending, data);
      for (const note of data.notices || []) {
        const small = document.createElement("small");
        small.className = "note";
        small.textContent = note;
        pending.append(small);
      }
      log.scrollTop = log.scrollHeight;
    } catch (err) {
      pending.remove();
      const note = document.createElement("small");
      note.className = "note";
      note.textContent = "not answered";
      asked.append(note);
      log.scrollTop = log.scrollHeight;
      showError("Could not get a reply: " + err.message);
      if (!input.value) input.value = text;   // easy to try again
    } finally {
      setBusy(false);
      input.focus();
    }
  });

  // The welcome line's example prompts: a click puts one in the message box.
  for (const example of document.querySelectorAll(".welcome .example")) {
    example.addEventListener("click", () => {
      input.value = example.textContent;
      input.focus();
    });
  }

  // Opening the settings shrinks the log; keep the latest messages in view.
  document.querySelector(".settings").addEventListener("toggle", () => {
    log.scrollTop = log.scrollHeight;
  });

  // Escape dismisses an error without leaving the keyboard.
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !errorBox.hidden) {
      clearError();
      input.focus();
    }
  });

  input.focus();
})();
