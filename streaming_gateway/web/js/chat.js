// The chat view: user and assistant messages, streaming text rendered as markdown, action cards
// with live status, and feedback buttons on each finished answer.

import { renderMarkdown } from "./markdown.js";

const FINISH_NOTES = {
  cancelled: "Stopped.",
  length: "The answer reached its length limit.",
  content_filter: "The answer was filtered.",
  error: "The answer ended with an error.",
  interrupted: "The answer was interrupted; it can be resumed.",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function describeStatus(status) {
  const attempts = status.max_attempts ? `${status.attempts}/${status.max_attempts}` : `${status.attempts}`;
  switch (status.status) {
    case "queued": return "Queued";
    case "running": return status.attempts > 1 ? `Running (attempt ${attempts})` : "Running";
    case "retrying": return `Retrying ${attempts}`;
    case "succeeded": return "Succeeded";
    case "failed": return "Failed";
    case "dead_lettered": return "Dead-lettered";
    default: return status.status;
  }
}

/** A box for arguments or a result: wide content scrolls inside it, so it takes the keyboard focus. */
function scrollBox(className, label, text) {
  const box = el("pre", className, text);
  box.tabIndex = 0;
  box.setAttribute("aria-label", label);
  return box;
}

function formatValue(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

export class ChatView {
  constructor(container, { onFeedback }) {
    this.container = container;
    this.onFeedback = onFeedback;
    this.answers = new Map(); // message id -> { node, text }
    this.cards = new Map(); // action id (live) or tool call id (history) -> card node
    this.stored = new Set(); // ids of the assistant messages rendered from the stored history
    this.current = null;
  }

  clear() {
    this.container.replaceChildren();
    this.answers.clear();
    this.cards.clear();
    this.stored.clear();
    this.current = null;
  }

  scrollToEnd() {
    this.container.scrollTop = this.container.scrollHeight;
  }

  addUser(text) {
    const node = el("article", "message user");
    node.setAttribute("aria-label", "You");
    node.append(el("p", "body", text));
    this.container.append(node);
    this.scrollToEnd();
  }

  /** Messages as stored by the gateway (GET /v1/conversations/{id}). */
  renderHistory(messages) {
    this.clear();
    const toolNames = new Map();
    for (const message of messages) {
      for (const call of message.tool_calls || []) toolNames.set(call.id, call.function ? call.function.name : call.name);
    }
    for (const message of messages) {
      if (message.role === "user") this.addUser(message.content || "");
      else if (message.role === "assistant") {
        const answer = this.answer(message.id);
        this.stored.add(message.id);
        answer.text = message.content || "";
        this.paint(answer);
        for (const call of message.tool_calls || []) {
          const card = this.card(answer, call.id, toolNames.get(call.id) || "action");
          card.querySelector(".action-args").textContent = formatValue(call.function ? call.function.arguments : call.arguments);
        }
        this.finish(answer, message.id, message.finish_reason || "stop");
      } else if (message.role === "tool") this.historyCard(message, toolNames.get(message.tool_call_id));
    }
    this.current = null;
  }

  /** Replayed events of a stored answer only move its action cards (the text is already shown). */
  replayStored(event) {
    if (event.type === "tool_call" && event.action_id && this.cards.has(event.tool_call_id)) {
      this.cards.set(event.action_id, this.cards.get(event.tool_call_id));
    } else if (event.type === "action_status" && this.cards.has(event.action_id)) {
      this.updateCard(this.cards.get(event.action_id), event);
    }
  }

  historyCard(message, name) {
    let parsed = {};
    try {
      parsed = JSON.parse(message.content || "{}");
    } catch (err) {
      parsed = { status: "succeeded", result: message.content };
    }
    const card = this.cards.get(message.tool_call_id) || this.card(this.current || this.answer(null), message.tool_call_id,
      name || "action");
    this.updateCard(card, { status: parsed.status || "succeeded", attempts: 0, result: parsed.result, error: parsed.error });
  }

  answer(messageId) {
    if (this.current && (this.current.id === messageId || this.current.id === null)) {
      if (messageId && !this.current.id) {
        this.current.id = messageId;
        this.answers.set(messageId, this.current);
      }
      return this.current;
    }
    if (messageId && this.answers.has(messageId)) return (this.current = this.answers.get(messageId));
    const node = el("article", "message assistant");
    node.setAttribute("aria-label", "Assistant");
    const body = el("div", "body markdown");
    const actions = el("div", "actions");
    const footer = el("footer", "answer-footer");
    node.append(body, actions, footer);
    this.container.append(node);
    const answer = { id: messageId, node, body, actions, footer, text: "", painting: false };
    if (messageId) this.answers.set(messageId, answer);
    this.current = answer;
    return answer;
  }

  paint(answer) {
    answer.body.innerHTML = renderMarkdown(answer.text);
  }

  schedulePaint(answer) {
    if (answer.painting) return;
    answer.painting = true;
    requestAnimationFrame(() => {
      answer.painting = false;
      this.paint(answer);
      this.scrollToEnd();
    });
  }

  /** One stream event, already deduplicated by the transport; false when it only replayed history. */
  handle(event) {
    if (event.message_id && this.stored.has(event.message_id)) {
      this.replayStored(event);
      return false;
    }
    if (event.type === "error" && event.code === "events_expired") return false; // the history shows them
    const answer = event.message_id || event.type === "token" ? this.answer(event.message_id || null) : this.current;
    switch (event.type) {
      case "token":
        answer.node.setAttribute("aria-busy", "true");
        answer.text += event.text;
        this.schedulePaint(answer);
        break;
      case "tool_call": {
        const card = this.card(answer || this.answer(null), event.action_id || event.tool_call_id, event.name);
        card.querySelector(".action-args").textContent = formatValue(event.arguments);
        break;
      }
      case "action_status": {
        const card = this.cards.get(event.action_id) || this.card(answer || this.answer(null), event.action_id, event.name);
        this.updateCard(card, event);
        break;
      }
      case "error":
        this.note(answer || this.answer(null), `Error: ${event.message}`, "error-note");
        break;
      case "message_end":
        if (answer) {
          this.paint(answer);
          if (event.finish_reason === "tool_calls") {
            this.current = null; // the continuation after the actions is a new answer
          } else this.finish(answer, event.message_id, event.finish_reason);
        }
        break;
      default:
        break;
    }
    return true;
  }

  note(answer, text, className) {
    answer.footer.prepend(el("p", className, text));
  }

  finish(answer, messageId, finishReason) {
    answer.node.removeAttribute("aria-busy");
    answer.node.dataset.finish = finishReason;
    if (FINISH_NOTES[finishReason]) this.note(answer, FINISH_NOTES[finishReason], "finish-note");
    if (messageId && !answer.footer.querySelector(".feedback") && (answer.text || answer.actions.childElementCount)) {
      answer.footer.append(this.feedbackButtons(messageId));
    }
    if (this.current === answer) this.current = null;
  }

  feedbackButtons(messageId) {
    const group = el("div", "feedback");
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", "Rate this answer");
    const status = el("span", "feedback-status");
    status.setAttribute("role", "status");
    for (const [rating, label] of [[5, "Helpful"], [1, "Not helpful"]]) {
      const button = el("button", "feedback-button", label);
      button.type = "button";
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", async () => {
        status.textContent = "Sending\u2026";
        try {
          await this.onFeedback(messageId, rating);
          for (const other of group.querySelectorAll("button")) other.setAttribute("aria-pressed", String(other === button));
          status.textContent = "Thanks for the feedback.";
        } catch (err) {
          status.textContent = `Feedback not sent: ${err.message}`;
        }
      });
      group.append(button);
    }
    group.append(status);
    return group;
  }

  card(answer, actionId, name) {
    const existing = actionId && this.cards.get(actionId);
    if (existing) return existing;
    const card = el("section", "action-card");
    card.dataset.status = "queued";
    if (actionId) card.dataset.actionId = actionId;
    card.setAttribute("aria-label", `Action ${name}`);
    const head = el("header", "action-head");
    head.append(el("span", "action-name", name), el("span", "action-status", "Queued"));
    const args = scrollBox("action-args", `${name} arguments`);
    const detail = el("div", "action-detail");
    detail.setAttribute("aria-live", "polite");
    card.append(head, args, detail);
    answer.actions.append(card);
    if (actionId) this.cards.set(actionId, card);
    this.scrollToEnd();
    return card;
  }

  updateCard(card, status) {
    card.dataset.status = status.status;
    card.querySelector(".action-status").textContent = describeStatus(status);
    const detail = card.querySelector(".action-detail");
    detail.replaceChildren();
    if (status.status === "succeeded" && status.result !== undefined && status.result !== null) {
      detail.append(el("p", "action-label", "Result"), scrollBox("action-result", "Result", formatValue(status.result)));
    } else if (status.error) {
      detail.append(el("p", "action-reason", `Reason: ${status.error}`));
    }
  }
}
