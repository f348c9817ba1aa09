// Sign-in: a pasted token, a token from the local-only dev endpoint, or MSAL.js (Entra ID).
// The MSAL library is loaded from this gateway (vendored) and only when Entra ID is configured.

const STORAGE_KEY = "agentChat.token";

function decodeClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
  } catch (err) {
    return null;
  }
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(script);
  });
}

export class Auth {
  constructor(config) {
    this.config = config;
    this.token = sessionStorage.getItem(STORAGE_KEY);
    this.msal = null;
    this.account = null;
  }

  get signedIn() {
    return Boolean(this.token || this.account);
  }

  get userName() {
    if (this.account) return this.account.username || this.account.name;
    const claims = this.token && decodeClaims(this.token);
    return claims ? claims.preferred_username || claims.sub || claims.oid : "";
  }

  usePastedToken(raw) {
    const token = raw.trim().replace(/^Bearer\s+/i, "");
    if (!/^[\w-]+\.[\w-]+\.[\w-]*$/.test(token)) throw new Error("That does not look like a JWT (three dot-separated parts).");
    const claims = decodeClaims(token);
    if (claims && typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) throw new Error("That token has expired.");
    this.setToken(token);
  }

  async fetchDevToken(user) {
    const response = await fetch("/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user }),
    });
    if (!response.ok) {
      const reason = response.status === 404 ? "the dev token endpoint is disabled on this gateway"
        : `the dev token endpoint answered ${response.status}`;
      throw new Error(reason);
    }
    this.setToken((await response.json()).token);
  }

  setToken(token) {
    this.token = token;
    sessionStorage.setItem(STORAGE_KEY, token);
  }

  signOut() {
    this.token = null;
    sessionStorage.removeItem(STORAGE_KEY);
    if (this.msal && this.account) this.msal.logoutRedirect({ account: this.account });
    this.account = null;
  }

  // --- Entra ID -------------------------------------------------------------------------------
  async initEntra() {
    const entra = this.config.entra;
    if (!entra) return;
    await loadScript(entra.msal_script);
    this.msal = new window.msal.PublicClientApplication({
      auth: { clientId: entra.client_id, authority: entra.authority, redirectUri: `${location.origin}/` },
      cache: { cacheLocation: "sessionStorage" },
    });
    await this.msal.initialize();
    const redirect = await this.msal.handleRedirectPromise();
    this.account = redirect ? redirect.account : this.msal.getAllAccounts()[0] || null;
  }

  async signInEntra() {
    await this.msal.loginRedirect({ scopes: this.config.entra.scopes });
  }

  /** The bearer token for the next request (MSAL renews it silently when it can). */
  async getToken() {
    if (this.account && this.msal) {
      const scopes = this.config.entra.scopes;
      try {
        return (await this.msal.acquireTokenSilent({ account: this.account, scopes })).accessToken;
      } catch (err) {
        if (err instanceof window.msal.InteractionRequiredAuthError) await this.msal.acquireTokenRedirect({ scopes });
        throw err;
      }
    }
    if (!this.token) throw new Error("not signed in");
    return this.token;
  }
}
