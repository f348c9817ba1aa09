// The page: sign-in, the conversation list, and the chat view wired to the streaming transport.

import { Api } from "./api.js";
import { Auth } from "./auth.js";
import { ChatView } from "./chat.js";
import { Transport } from "./transport.js";

const $ = (id) => document.getElementById(id);
const STATE_LABELS = { connecting: "Connecting", connected: "Connected", reconnecting: "Reconnecting", offline: "Offline" };

class App {
  constructor(config) {
    this.config = config;
    this.auth = new Auth(config);
    this.api = new Api(() => this.auth.getToken());
    this.view = new ChatView($("messages"), {
      onFeedback: (messageId, rating) => this.api.feedback(this.conversationId, messageId, rating),
    });
    this.conversationId = null;
    this.transport = null;
    // ?transport=sse|ws forces one transport (diagnostics); the default tries WebSocket first.
    this.mode = new URLSearchParams(location.search).get("transport") || "auto";
  }

  async start() {
    this.bindSignIn();
    this.bindChat();
    if (this.config.entra) {
      try {
        await this.auth.initEntra();
        $("entra-signin").hidden = false;
      } catch (err) {
        this.showSignInError(`Entra ID sign-in is unavailable: ${err.message}`);
      }
    }
    $("dev-form").hidden = !this.config.dev_token;
    if (!this.auth.signedIn) {
      this.showSignIn();
      return;
    }
    try {
      await this.enter();
    } catch (err) {
      this.auth.signOut();
      this.showSignIn();
      this.showSignInError(`Please sign in again: ${err.message}`);
    }
  }

  // --- sign-in --------------------------------------------------------------------------------
  bindSignIn() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.trySignIn(() => this.auth.usePastedToken($("token-input").value));
    });
    $("dev-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.trySignIn(() => this.auth.fetchDevToken($("dev-user").value.trim() || "alice"));
    });
    $("entra-signin").addEventListener("click", () => this.trySignIn(() => this.auth.signInEntra()));
    $("sign-out").addEventListener("click", () => {
      this.auth.signOut();
      if (this.transport) this.transport.close();
      this.transport = null;
      this.conversationId = null;
      this.view.clear();
      this.showSignIn();
    });
  }

  async trySignIn(how) {
    this.showSignInError("");
    try {
      await how();
      await this.enter();
    } catch (err) {
      this.auth.token = null;
      this.showSignInError(err.message);
    }
  }

  showSignInError(text) {
    $("signin-error").textContent = text;
  }

  showSignIn() {
    $("signin").hidden = false;
    $("workspace").hidden = true;
    $("sign-out").hidden = true;
    $("who").textContent = "";
    this.setConnection("offline", "not signed in");
    $("token-input").focus();
  }

  async enter() {
    const page = await this.api.listConversations(); // also proves the token works
    $("signin").hidden = true;
    $("workspace").hidden = false;
    $("sign-out").hidden = false;
    $("toggle-sidebar").hidden = false;
    $("who").textContent = `Signed in as ${this.auth.userName}`;
    this.renderList(page.data);
    this.transport = new Transport({
      getToken: () => this.auth.getToken(),
      mode: this.mode,
      onEvent: (event) => this.onEvent(event),
      onState: (state, detail) => this.setConnection(state, detail),
      onRejected: (frame) => this.onRejected(frame),
    });
    this.transport.start();
    if (page.data.length) await this.open(page.data[0].id);
    $("composer-input").focus();
  }

  setConnection(state, detail) {
    const node = $("connection");
    node.dataset.state = state;
    node.textContent = `${STATE_LABELS[state] || state}${detail ? ` (${detail})` : ""}`;
  }

  // --- conversations --------------------------------------------------------------------------
  renderList(conversations) {
    const list = $("conversation-list");
    list.replaceChildren();
    for (const conversation of conversations) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "conversation";
      button.dataset.id = conversation.id;
      button.textContent = conversation.title || `Conversation of ${new Date(conversation.created_at).toLocaleString()}`;
      button.title = button.textContent; // the whole title, where the list cuts it short
      if (conversation.id === this.conversationId) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => this.open(conversation.id).catch((err) => this.showError(err.message)));
      item.append(button);
      list.append(item);
    }
  }

  async refreshList() {
    this.renderList((await this.api.listConversations()).data);
  }

  async open(id) {
    const conversation = await this.api.getConversation(id);
    this.conversationId = id;
    this.view.renderHistory(conversation.messages || []);
    // Replay the stream log from the start: stored answers only update their action cards, and an
    // answer still in progress (not stored yet) appears whole, then streams on.
    this.transport.follow(id, 0);
    this.transport.answering = false;
    for (const button of document.querySelectorAll(".conversation")) {
      if (button.dataset.id === id) button.setAttribute("aria-current", "true");
      else button.removeAttribute("aria-current");
    }
    this.setAnswering(false);
    this.toggleSidebar(false);
  }

  /** An empty conversation view; the conversation itself is created by its first message. */
  startNewConversation() {
    this.conversationId = null;
    this.view.clear();
    this.setAnswering(false);
    for (const button of document.querySelectorAll(".conversation")) button.removeAttribute("aria-current");
    this.toggleSidebar(false);
    $("composer-input").focus();
  }

  /** Create the conversation (the gateway titles it after its first message) and follow its stream. */
  async createConversation() {
    const conversation = await this.api.createConversation();
    this.conversationId = conversation.id;
    this.transport.follow(conversation.id, conversation.last_event_id || 0);
    await this.refreshList();
  }

  toggleSidebar(open) {
    document.body.classList.toggle("sidebar-open", open);
    $("toggle-sidebar").setAttribute("aria-expanded", String(open));
  }

  // --- chat -----------------------------------------------------------------------------------
  bindChat() {
    $("new-conversation").addEventListener("click", () => this.startNewConversation());
    $("toggle-sidebar").addEventListener("click", () => this.toggleSidebar(!document.body.classList.contains("sidebar-open")));
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    $("composer-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send();
      }
    });
    $("stop").addEventListener("click", () => this.stop());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && !$("stop").hidden) this.stop();
    });
  }

  async send() {
    const input = $("composer-input");
    const content = input.value.trim();
    if (!content || this.transport.answering) return;
    if (!this.transport.ready) {
      this.showError("Not connected yet; the message is kept, send it again once connected.");
      return;
    }
    this.showError("");
    try {
      if (!this.conversationId) await this.createConversation();
      this.view.addUser(content);
      input.value = "";
      this.setAnswering(true);
      await this.transport.send(this.conversationId, content);
    } catch (err) {
      if (err.status === 401) this.onRejected({ status: 401, message: err.message });
      this.setAnswering(false);
      this.showError(err.message);
    }
  }

  async stop() {
    try {
      await this.transport.cancel(this.conversationId, this.api);
    } catch (err) {
      this.showError(`Could not stop: ${err.message}`);
    }
  }

  onEvent(event) {
    if (event.conversation_id !== this.conversationId) return;
    const live = this.view.handle(event);
    if (live && event.type === "token" && !this.transport.answering) {
      // An answer already under way when the conversation was opened (a reload, another tab).
      this.transport.answering = true;
      this.setAnswering(true);
    }
    if (event.type === "message_end" && event.finish_reason !== "tool_calls") {
      this.setAnswering(false);
      this.refreshList().catch((err) => console.warn("conversation list not refreshed", err));
    }
  }

  onRejected(frame) {
    this.setAnswering(false);
    this.transport.answering = false;
    if (frame.status === 401) {
      // The token expired or was revoked: back to sign-in rather than retrying forever.
      $("sign-out").click();
      this.showSignInError(`Please sign in again: ${frame.message}`);
      return;
    }
    this.showError(frame.message || "The gateway refused the request.");
  }

  setAnswering(answering) {
    $("stop").hidden = !answering;
    $("send").disabled = answering;
    if (!answering && document.activeElement === $("stop")) $("composer-input").focus();
  }

  showError(text) {
    $("chat-error").textContent = text;
  }
}

async function main() {
  const response = await fetch("/client-config.json");
  const config = response.ok ? await response.json() : { dev_token: false, entra: null };
  const app = new App(config);
  window.agentChat = app; // for diagnostics in the browser console
  await app.start();
}

main().catch((err) => {
  document.getElementById("signin-error").textContent = `The page failed to start: ${err.message}`;
});
