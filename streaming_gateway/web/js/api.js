// The gateway's REST API with the signed-in user's bearer token; errors carry the server's message.

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function errorFrom(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
    }
  } catch (err) {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, code);
}

export class Api {
  constructor(getToken) {
    this.getToken = getToken;
  }

  async headers(extra = {}) {
    return { Authorization: `Bearer ${await this.getToken()}`, ...extra };
  }

  async request(method, path, body) {
    const init = { method, headers: await this.headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) init.body = JSON.stringify(body);
    const response = await fetch(path, init);
    if (!response.ok) throw await errorFrom(response);
    return response.status === 204 ? null : response.json();
  }

  listConversations() {
    return this.request("GET", "/v1/conversations?limit=50");
  }

  createConversation(title) {
    return this.request("POST", "/v1/conversations", title ? { title } : {});
  }

  getConversation(id) {
    return this.request("GET", `/v1/conversations/${encodeURIComponent(id)}`);
  }

  cancel(id) {
    return this.request("POST", `/v1/conversations/${encodeURIComponent(id)}/cancel`);
  }

  feedback(id, messageId, rating) {
    return this.request("POST", `/v1/conversations/${encodeURIComponent(id)}/feedback`,
      { message_id: messageId, rating });
  }
}
