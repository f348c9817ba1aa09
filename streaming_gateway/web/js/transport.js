// The streaming transport: a WebSocket by default, SSE over fetch as the fallback.
//
// Every event carries an integer id that grows per conversation. The transport remembers the
// last id it delivered for each conversation and drops anything at or below it, so a resume
// (which replays from the last id) never shows text twice and never skips any. A dropped
// connection is retried with exponential backoff and jitter; after two WebSocket connections in
// a row that fail before opening, it switches to SSE for the rest of the page's life.

import { errorFrom } from "./api.js";
import { readSse } from "./sse.js";

const BACKOFF_START_MS = 250;
const BACKOFF_MAX_MS = 8000;
const WS_FAILURES_BEFORE_SSE = 2;

function finalEnd(event) {
  return event.type === "message_end" && event.finish_reason !== "tool_calls";
}

export class Transport {
  /**
   * @param {object} opts
   * @param {() => Promise<string>} opts.getToken
   * @param {"auto"|"ws"|"sse"} opts.mode
   * @param {(event: object) => void} opts.onEvent    stream events, deduplicated, in id order
   * @param {(state: string, detail?: string) => void} opts.onState
   * @param {(frame: object) => void} opts.onRejected a message or resume the server refused
   */
  constructor({ getToken, mode = "auto", onEvent, onState, onRejected }) {
    this.getToken = getToken;
    this.mode = mode === "sse" ? "sse" : "ws";
    this.allowFallback = mode === "auto";
    this.onEvent = onEvent;
    this.onState = onState;
    this.onRejected = onRejected;
    this.lastIds = new Map();
    this.conversationId = null;
    this.answering = false;
    this.ws = null;
    this.wsFailures = 0;
    this.attempt = 0;
    this.retryTimer = null;
    this.sseAbort = null;
    this.closed = false;
  }

  lastId(cid) {
    return this.lastIds.get(cid) || 0;
  }

  /** Whether a message can be sent now (SSE opens a request per message, so it always can). */
  get ready() {
    return this.mode === "sse" || this.wsOpen();
  }

  get transportName() {
    return this.mode === "ws" ? "WebSocket" : "SSE";
  }

  start() {
    if (this.mode === "ws") this.openSocket();
    else this.setState("connected");
  }

  close() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000, "signed out");
    if (this.sseAbort) this.sseAbort.abort();
  }

  setState(state, detail) {
    this.state = state;
    this.onState(state, detail || this.transportName);
  }

  /** Follow a conversation from `after` (the id of the last event the page already shows; the page
   * re-renders a conversation it opens, so this replaces what was remembered). */
  follow(cid, after) {
    this.conversationId = cid;
    this.lastIds.set(cid, after);
    if (this.mode === "ws" && this.wsOpen()) this.sendFrame({ type: "resume", conversation_id: cid, after: this.lastId(cid) });
  }

  async send(cid, content) {
    this.conversationId = cid;
    this.answering = true;
    if (this.mode === "ws") {
      if (!this.wsOpen()) throw new Error("not connected; retrying shortly");
      this.sendFrame({ type: "message", conversation_id: cid, content });
      return;
    }
    await this.postSse(cid, content);
  }

  /** Stop the answer in progress (WebSocket cancel frame, else the REST endpoint). */
  async cancel(cid, api) {
    if (this.mode === "ws" && this.wsOpen()) this.sendFrame({ type: "cancel", conversation_id: cid });
    else await api.cancel(cid);
  }

  // --- delivery -------------------------------------------------------------------------------
  deliver(event) {
    const cid = event.conversation_id;
    if (typeof event.id !== "number" || !cid) return;
    if (event.id <= this.lastId(cid)) return; // already shown: a replay after a resume
    this.lastIds.set(cid, event.id);
    if (cid === this.conversationId && finalEnd(event)) this.answering = false;
    this.onEvent(event);
  }

  scheduleRetry(what) {
    if (this.closed) return;
    clearTimeout(this.retryTimer);
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_START_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.setState("reconnecting", `${this.transportName}, retry in ${(delay / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(what, delay);
  }

  // --- WebSocket ------------------------------------------------------------------------------
  wsOpen() {
    return this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  sendFrame(frame) {
    this.ws.send(JSON.stringify(frame));
  }

  /** A ticket that opens one WebSocket as the signed-in user (the bearer token goes in a header). */
  async wsTicket() {
    const token = await this.getToken(); // a sign-in failure has no status: the user must sign in
    let response;
    try {
      response = await fetch("/v1/ws/tickets", { method: "POST", headers: { Authorization: `Bearer ${token}` } });
    } catch (err) {
      err.status = 0; // the network: retried
      throw err;
    }
    if (!response.ok) throw await errorFrom(response);
    return (await response.json()).ticket;
  }

  async openSocket() {
    if (this.closed) return;
    this.setState(this.attempt ? "reconnecting" : "connecting");
    let ticket;
    try {
      ticket = await this.wsTicket();
    } catch (err) {
      if (err.status === 401 || err.status === undefined) {
        this.setState("offline", `sign-in needed: ${err.message}`);
        return;
      }
      this.scheduleRetry(() => this.openSocket()); // 429, 5xx or the network: try again later
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // A single-use ticket, never the token: URLs end up in proxy and gateway access logs.
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws?ticket=${encodeURIComponent(ticket)}`);
    let opened = false;
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.wsFailures = 0;
      this.attempt = 0;
      this.setState("connected");
      const cid = this.conversationId;
      if (cid) this.sendFrame({ type: "resume", conversation_id: cid, after: this.lastId(cid) });
    };
    ws.onmessage = (message) => this.onSocketFrame(message.data);
    ws.onclose = (event) => {
      if (this.ws !== ws || this.closed) return;
      this.ws = null;
      if (!opened) this.wsFailures += 1;
      if (!opened && this.allowFallback && this.wsFailures >= WS_FAILURES_BEFORE_SSE) {
        this.switchToSse();
        return;
      }
      console.info("websocket closed", event.code, event.reason);
      this.scheduleRetry(() => this.openSocket());
    };
  }

  onSocketFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (err) {
      console.warn("ignoring a frame that is not JSON", err);
      return;
    }
    if (frame.type === "rejected") this.onRejected(frame);
    else if (frame.type === "ack" || frame.type === "pong" || frame.type === "cancelled") return;
    else this.deliver(frame);
  }

  switchToSse() {
    this.mode = "sse";
    this.attempt = 0;
    this.setState("connected", "SSE (WebSocket unavailable)");
    if (this.answering && this.conversationId) this.resumeSse(this.conversationId);
  }

  // --- SSE ------------------------------------------------------------------------------------
  async postSse(cid, content) {
    const response = await this.fetchSse(`/v1/conversations/${encodeURIComponent(cid)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ content }),
    });
    if (!response.ok) {
      this.answering = false;
      throw await errorFrom(response);
    }
    this.pump(cid, response);
  }

  async resumeSse(cid) {
    if (this.closed || cid !== this.conversationId || !this.answering) return;
    this.setState(this.attempt ? "reconnecting" : "connected");
    let response;
    try {
      response = await this.fetchSse(`/v1/conversations/${encodeURIComponent(cid)}/events?until=end`, {
        headers: { "Last-Event-ID": String(this.lastId(cid)) },
      });
    } catch (err) {
      this.scheduleRetry(() => this.resumeSse(cid));
      return;
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (error.status >= 500 || error.status === 429) this.scheduleRetry(() => this.resumeSse(cid));
      else {
        this.answering = false;
        this.onRejected({ code: error.code, message: error.message, status: error.status });
      }
      return;
    }
    this.pump(cid, response);
  }

  async fetchSse(path, init) {
    if (this.sseAbort) this.sseAbort.abort();
    this.sseAbort = new AbortController();
    const headers = { ...(init.headers || {}), Accept: "text/event-stream", Authorization: `Bearer ${await this.getToken()}` };
    return fetch(path, { ...init, headers, signal: this.sseAbort.signal });
  }

  async pump(cid, response) {
    this.attempt = 0;
    this.setState("connected");
    try {
      await readSse(response, (event) => this.deliver(event));
    } catch (err) {
      if (err.name === "AbortError") return;
      console.info("SSE stream broke", err);
    }
    if (this.answering && cid === this.conversationId) this.scheduleRetry(() => this.resumeSse(cid));
  }

  /** Break the current connection as a network failure would (used by the page's diagnostics). */
  simulateDrop() {
    if (this.ws) this.ws.close(4000, "simulated drop");
    if (this.sseAbort) {
      this.sseAbort.abort();
      if (this.answering && this.conversationId) this.scheduleRetry(() => this.resumeSse(this.conversationId));
    }
  }
}
