// nubis console: the chat box of an LLM deployment; the answer streams in as it is generated.
"use strict";
(function () {
  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRF-Token"] || ""; }
    catch (e) { return ""; }
  }

  function bubble(box, role, text) {
    const el = document.createElement("div");
    el.className = "msg " + role;
    el.textContent = text;
    box.appendChild(el);
    box.scrollTop = box.scrollHeight;
    return el;
  }

  // One SSE event block ("event: x\ndata: y") → [name, data].
  function parse(block) {
    let name = "message";
    const data = [];
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) name = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
    });
    return [name, data.join("\n")];
  }

  async function send(form, messages, box, button) {
    const answer = bubble(box, "assistant", "");
    answer.dataset.state = "streaming";
    button.disabled = true;
    try {
      const r = await fetch(form.action, {
        method: "POST", credentials: "same-origin", body: JSON.stringify({ messages: messages }),
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken(), Accept: "text/event-stream" },
      });
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const step = await reader.read();
        if (step.done) break;
        buffer += decoder.decode(step.value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = parse(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event[0] === "delta") answer.textContent += JSON.parse(event[1]);
          else if (event[0] === "failed") throw new Error(JSON.parse(event[1]));
          box.scrollTop = box.scrollHeight;
        }
      }
      messages.push({ role: "assistant", content: answer.textContent });
      answer.dataset.state = "done";
    } catch (err) {
      answer.classList.add("error");
      answer.textContent = "error: " + err.message;
      answer.dataset.state = "failed";
      messages.pop();
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-chat]").forEach(function (form) {
      const box = form.querySelector(".chat");
      const input = form.querySelector("textarea");
      const button = form.querySelector("button[type=submit]");
      const messages = [];
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        const text = input.value.trim();
        if (!text || button.disabled) return;
        messages.push({ role: "user", content: text });
        bubble(box, "user", text);
        input.value = "";
        send(form, messages, box, button);
      });
      input.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
      });
    });
  });
})();
