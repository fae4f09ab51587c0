// Estuary interaction channel client: one WebSocket to /live/{stream}/events carrying
// versioned JSON frames (docs/interaction.md). Reconnects with capped backoff and resumes
// chat after the last message id it saw, so a reconnect shows no gap and no duplicate.
"use strict";

(function () {
  const VERSION = 1;
  const MAX_ATTEMPTS = 60; // then give up and ask for a reload

  class Interact {
    /**
     * @param {string} stream stream name
     * @param {{token?: string, onFrame: (f: object) => void, onStatus: (s: string) => void}} opts
     */
    constructor(stream, opts) {
      this.stream = stream;
      this.token = opts.token || "";
      this.onFrame = opts.onFrame;
      this.onStatus = opts.onStatus || (() => {});
      this.ws = null;
      this.lastChatId = null;
      this.attempts = 0;
      this.refSeq = 0;
      this.pending = new Map(); // ref -> {resolve, reject, timer}
      this.closed = false;
      this.welcome = null;
    }

    url() {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      const q = this.token ? "?token=" + encodeURIComponent(this.token) : "";
      return `${proto}//${location.host}/live/${encodeURIComponent(this.stream)}/events${q}`;
    }

    connect() {
      if (this.closed) return;
      this.onStatus(this.attempts ? "reconnecting" : "connecting");
      let ws;
      try {
        ws = new WebSocket(this.url());
      } catch (e) {
        this.scheduleReconnect();
        return;
      }
      this.ws = ws;
      ws.onopen = () => {
        this.attempts = 0;
        this.onStatus("open");
        if (this.lastChatId) this.send({ type: "resume", after: this.lastChatId });
      };
      ws.onmessage = (ev) => {
        let f;
        try {
          f = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        if (!f || typeof f.type !== "string") return;
        if (f.type === "welcome") this.welcome = f;
        if (f.type === "chat" && f.id) this.lastChatId = f.id;
        if (f.type === "history" && Array.isArray(f.messages) && f.messages.length) {
          this.lastChatId = f.messages[f.messages.length - 1].id;
        }
        if ((f.type === "ack" || f.type === "error") && f.ref && this.pending.has(f.ref)) {
          const p = this.pending.get(f.ref);
          this.pending.delete(f.ref);
          clearTimeout(p.timer);
          if (f.type === "ack") p.resolve(f);
          else p.reject(f);
        }
        this.onFrame(f);
      };
      ws.onclose = (ev) => {
        this.ws = null;
        for (const [, p] of this.pending) {
          clearTimeout(p.timer);
          p.reject({ type: "error", code: "disconnected", message: "connection closed" });
        }
        this.pending.clear();
        if (this.closed) return;
        this.onStatus(ev.code === 1008 || ev.code === 4001 ? "refused" : "closed");
        this.scheduleReconnect();
      };
      ws.onerror = () => {};
    }

    scheduleReconnect() {
      if (this.closed) return;
      this.attempts += 1;
      if (this.attempts > MAX_ATTEMPTS) {
        this.onStatus("gave-up");
        return;
      }
      const delay = Math.min(15000, 500 * 2 ** Math.min(this.attempts - 1, 5)) * (0.75 + Math.random() * 0.5);
      setTimeout(() => this.connect(), delay);
    }

    get isOpen() {
      return !!this.ws && this.ws.readyState === WebSocket.OPEN;
    }

    /** Sends a frame; false when the socket is not open. */
    send(frame) {
      if (!this.isOpen) return false;
      this.ws.send(JSON.stringify(Object.assign({ v: VERSION }, frame)));
      return true;
    }

    /** Sends a frame with a ref; resolves with its ack, rejects with its error frame. */
    request(frame, timeoutMs = 8000) {
      return new Promise((resolve, reject) => {
        const ref = "r" + ++this.refSeq;
        if (!this.send(Object.assign({ ref }, frame))) {
          reject({ type: "error", code: "disconnected", message: "not connected to the interaction channel" });
          return;
        }
        const timer = setTimeout(() => {
          this.pending.delete(ref);
          reject({ type: "error", code: "timeout", message: "no answer from the server" });
        }, timeoutMs);
        this.pending.set(ref, { resolve, reject, timer });
      });
    }

    close() {
      this.closed = true;
      if (this.ws) this.ws.close(1000);
    }
  }

  window.EstuaryInteract = Interact;
})();
