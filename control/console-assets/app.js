// ELB console: a Query API client that authenticates with a console session.
//
// Every load balancer action is a POST of the Query API's own parameters to api/query, which
// control runs through the same dispatcher and IAM evaluation as a signed request and answers
// with the same XML. The session cookie is HttpOnly; this script only holds the CSRF token
// (in memory). No secret is ever stored by the page.
"use strict";

(() => {
  const API_VERSION = "2012-06-01";
  const HEALTH_POLL_MS = 2000;
  const METRICS_POLL_MS = 10000;
  const ADMIN_POLL_MS = 5000;
  /** Shortest time span a plot shows, in 10-second points (5 minutes). */
  const MIN_SPAN_POINTS = 30;

  /** The signed-in session (`GET api/session`), or null. */
  let session = null;
  /** Timers and plots of the current view, stopped when the view changes. */
  let viewTimers = [];
  let viewPlots = [];
  let viewGeneration = 0;
  /** A message to show on the page that the next navigation opens. */
  let carriedNotice = null;

  // ---------------------------------------------------------------- DOM helpers

  /** Builds an element: h("a", {href: "#/"}, "text", child, ...). Text is never parsed as HTML. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "value") el.value = v;
      else if (k === "checked") el.checked = Boolean(v);
      else if (v === true) el.setAttribute(k, "");
      else el.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const $ = (id) => document.getElementById(id);
  let idSeq = 0;
  const newId = (p) => `${p}-${++idSeq}`;

  /** A labelled input. */
  function field(label, input, hint) {
    input.id = input.id || newId("f");
    const hintId = hint ? newId("hint") : null;
    if (hintId) input.setAttribute("aria-describedby", hintId);
    return h("div", { class: "field" }, h("label", { for: input.id }, label), input,
      hint ? h("p", { class: "hint", id: hintId }, hint) : null);
  }
  function checkbox(label, checked, attrs) {
    const input = h("input", Object.assign({ type: "checkbox", id: newId("c"), checked }, attrs || {}));
    return { input, el: h("div", { class: "check" }, input, h("label", { for: input.id }, label)) };
  }
  function numberInput(name, value, min, max) {
    return h("input", { type: "number", name, value, min, max, step: 1, required: true });
  }
  function select(name, options, selected) {
    return h("select", { name }, options.map((o) => {
      const [value, text] = Array.isArray(o) ? o : [o, o];
      return h("option", { value, selected: value === selected ? "selected" : null }, text);
    }));
  }
  function table(caption, headers, rows, attrs) {
    return h("table", attrs || {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col", class: x.num ? "num" : null }, x.text || x)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, "None"))));
  }

  // ---------------------------------------------------------------- messages

  function clearMessages() {
    $("notice").replaceChildren();
    $("error").replaceChildren();
  }
  function notice(text) {
    $("error").replaceChildren();
    $("notice").replaceChildren(h("p", {}, text));
  }
  function showError(err) {
    $("notice").replaceChildren();
    const box = $("error");
    if (err instanceof ApiError) {
      box.replaceChildren(h("p", {}, h("span", { class: "code" }, err.code), ": ", err.message,
        err.requestId ? h("span", { class: "hint" }, ` (request ${err.requestId})`) : null));
    } else {
      box.replaceChildren(h("p", {}, String(err && err.message ? err.message : err)));
    }
    box.scrollIntoView({ block: "nearest" });
  }

  // ---------------------------------------------------------------- HTTP

  class ApiError extends Error {
    constructor(status, code, message, requestId) {
      super(message);
      this.status = status;
      this.code = code;
      this.requestId = requestId || "";
    }
  }

  /** Calls a console endpoint; returns parsed JSON, an XML document, or null. */
  async function call(method, path, { json, form } = {}) {
    const headers = {};
    if (method !== "GET" && session) headers["X-CSRF-Token"] = session.CsrfToken;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      body = form;
    }
    let resp;
    try {
      resp = await fetch(path, { method, headers, body, credentials: "same-origin", cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "NetworkError", "The control service could not be reached: " + e.message);
    }
    const type = resp.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      const data = await resp.json();
      if (!resp.ok) {
        const e = (data && data.Error) || {};
        const err = new ApiError(resp.status, e.Code || `HTTP ${resp.status}`, e.Message || resp.statusText);
        if (resp.status === 401) signedOut(err.message);
        throw err;
      }
      return data;
    }
    if (type.includes("xml")) {
      const doc = new DOMParser().parseFromString(await resp.text(), "application/xml");
      if (!resp.ok) {
        const e = path1(doc.documentElement, "Error");
        throw new ApiError(resp.status, txt(e, "Code") || `HTTP ${resp.status}`,
          txt(e, "Message") || resp.statusText, txt(doc.documentElement, "RequestId"));
      }
      return doc;
    }
    if (!resp.ok) throw new ApiError(resp.status, `HTTP ${resp.status}`, resp.statusText);
    return null;
  }

  /** Runs a Query API action: `params` are the API's own parameter names. */
  function elb(action, params) {
    const form = new URLSearchParams({ Action: action, Version: API_VERSION });
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== undefined && v !== null) form.append(k, String(v));
    }
    return call("POST", "api/query", { form: form.toString() });
  }

  /** `prefix.member.N` = value (and `prefix=` for an empty list, which clears). */
  function listParams(prefix, values, out) {
    out = out || {};
    if (values.length === 0) out[prefix] = "";
    values.forEach((v, i) => { out[`${prefix}.member.${i + 1}`] = v; });
    return out;
  }
  /** `prefix.member.N.Field` = value for each member's fields (empty fields left out). */
  function structParams(prefix, items, out) {
    out = out || {};
    items.forEach((item, i) => {
      for (const [k, v] of Object.entries(item)) {
        if (v !== undefined && v !== null && v !== "") out[`${prefix}.member.${i + 1}.${k}`] = v;
      }
    });
    return out;
  }

  // ---------------------------------------------------------------- XML helpers

  const kids = (el, name) => (el ? Array.from(el.children).filter((c) => c.localName === name) : []);
  const kid = (el, name) => kids(el, name)[0] || null;
  const txt = (el, name) => { const c = kid(el, name); return c ? c.textContent : ""; };
  const path1 = (el, ...names) => names.reduce((e, n) => kid(e, n), el);
  const members = (el) => kids(el, "member");
  const result = (doc, action) => path1(doc.documentElement, `${action}Result`);

  function parseLb(m) {
    const hc = kid(m, "HealthCheck");
    const policies = kid(m, "Policies");
    return {
      name: txt(m, "LoadBalancerName"),
      dns: txt(m, "DNSName"),
      scheme: txt(m, "Scheme"),
      created: txt(m, "CreatedTime"),
      zones: members(kid(m, "AvailabilityZones")).map((e) => e.textContent),
      instances: members(kid(m, "Instances")).map((i) => txt(i, "InstanceId")),
      listeners: members(kid(m, "ListenerDescriptions")).map((ld) => {
        const l = kid(ld, "Listener");
        return {
          protocol: txt(l, "Protocol"),
          port: txt(l, "LoadBalancerPort"),
          instanceProtocol: txt(l, "InstanceProtocol"),
          instancePort: txt(l, "InstancePort"),
          cert: txt(l, "SSLCertificateId"),
          policies: members(kid(ld, "PolicyNames")).map((e) => e.textContent),
        };
      }),
      backends: members(kid(m, "BackendServerDescriptions")).map((b) => ({
        port: txt(b, "InstancePort"),
        policies: members(kid(b, "PolicyNames")).map((e) => e.textContent),
      })),
      healthCheck: {
        target: txt(hc, "Target"),
        interval: txt(hc, "Interval"),
        timeout: txt(hc, "Timeout"),
        unhealthy: txt(hc, "UnhealthyThreshold"),
        healthy: txt(hc, "HealthyThreshold"),
      },
      stickiness: {
        app: members(kid(policies, "AppCookieStickinessPolicies")).map((p) => txt(p, "PolicyName")),
        lb: members(kid(policies, "LBCookieStickinessPolicies")).map((p) => txt(p, "PolicyName")),
      },
    };
  }

  async function describeLbs() {
    const all = [];
    let marker;
    do {
      const doc = await elb("DescribeLoadBalancers", marker ? { Marker: marker } : {});
      const r = result(doc, "DescribeLoadBalancers");
      members(kid(r, "LoadBalancerDescriptions")).forEach((m) => all.push(parseLb(m)));
      marker = txt(r, "NextMarker");
    } while (marker);
    return all;
  }

  async function describeLb(name) {
    const doc = await elb("DescribeLoadBalancers", listParams("LoadBalancerNames", [name]));
    const m = members(kid(result(doc, "DescribeLoadBalancers"), "LoadBalancerDescriptions"))[0];
    return parseLb(m);
  }

  async function describeHealth(name) {
    const doc = await elb("DescribeInstanceHealth", { LoadBalancerName: name });
    return members(kid(result(doc, "DescribeInstanceHealth"), "InstanceStates")).map((s) => ({
      id: txt(s, "InstanceId"),
      state: txt(s, "State"),
      reason: txt(s, "ReasonCode"),
      description: txt(s, "Description"),
    }));
  }

  async function describeAttributes(name) {
    const doc = await elb("DescribeLoadBalancerAttributes", { LoadBalancerName: name });
    const a = kid(result(doc, "DescribeLoadBalancerAttributes"), "LoadBalancerAttributes");
    return {
      crossZone: txt(kid(a, "CrossZoneLoadBalancing"), "Enabled") === "true",
      drainingEnabled: txt(kid(a, "ConnectionDraining"), "Enabled") === "true",
      drainingTimeout: txt(kid(a, "ConnectionDraining"), "Timeout"),
      idleTimeout: txt(kid(a, "ConnectionSettings"), "IdleTimeout"),
      logEnabled: txt(kid(a, "AccessLog"), "Enabled") === "true",
      logBucket: txt(kid(a, "AccessLog"), "S3BucketName"),
      logPrefix: txt(kid(a, "AccessLog"), "S3BucketPrefix"),
      logInterval: txt(kid(a, "AccessLog"), "EmitInterval") || "60",
    };
  }

  async function describePolicies(name) {
    const doc = await elb("DescribeLoadBalancerPolicies", { LoadBalancerName: name });
    return members(kid(result(doc, "DescribeLoadBalancerPolicies"), "PolicyDescriptions")).map((p) => ({
      name: txt(p, "PolicyName"),
      type: txt(p, "PolicyTypeName"),
      attributes: members(kid(p, "PolicyAttributeDescriptions")).map((a) => [txt(a, "AttributeName"), txt(a, "AttributeValue")]),
    }));
  }

  async function describePolicyTypes() {
    const doc = await elb("DescribeLoadBalancerPolicyTypes", {});
    return members(kid(result(doc, "DescribeLoadBalancerPolicyTypes"), "PolicyTypeDescriptions")).map((t) => txt(t, "PolicyTypeName"));
  }

  // ---------------------------------------------------------------- views

  function stopView() {
    viewGeneration += 1;
    viewTimers.forEach((t) => clearInterval(t));
    viewTimers = [];
    viewPlots.forEach((p) => p.destroy());
    viewPlots = [];
  }
  /** Opens `hash`, then shows `message` there. */
  function navigate(hash, message) {
    carriedNotice = message || null;
    if (location.hash === hash) route();
    else location.hash = hash;
  }
  /** Renders the load balancer page again (after a change), then shows `message`. */
  async function reloadLb(name, message) {
    stopView();
    await renderLb(name);
    notice(message);
    $("notice").focus();
  }
  /** Repeats `fn` every `ms` while the current view is shown. */
  function every(ms, fn) {
    viewTimers.push(setInterval(fn, ms));
  }
  /** Replaces the page's content; the heading gets focus so screen readers announce it. */
  function show(title, ...content) {
    document.title = `${title} · ELB console`;
    const heading = h("h1", { tabindex: "-1" }, title);
    $("main").replaceChildren(heading, ...content);
    heading.focus();
    for (const a of document.querySelectorAll("#nav a")) {
      if (a.getAttribute("href") === (location.hash || "#/")) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
  }

  /** Disables a form's buttons while `work` runs; shows the API's error if it fails. */
  async function submitting(form, work) {
    const buttons = Array.from(form.querySelectorAll("button"));
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await work();
    } catch (e) {
      showError(e);
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }
  function onSubmit(form, work) {
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      submitting(form, work);
    });
    return form;
  }

  function setSignedIn(s) {
    session = s;
    const signedIn = Boolean(s);
    $("nav").hidden = !signedIn;
    $("who").hidden = !signedIn;
    $("nav-admin").hidden = !(s && s.Admin);
    $("who-text").textContent = s ? `${s.UserName} @ ${s.AccountId} · ${s.Region}` : "";
  }

  function signedOut(message) {
    if (!session) return;
    setSignedIn(null);
    stopView();
    renderSignIn(message);
  }

  async function renderSignIn(message) {
    let regions = [];
    try {
      regions = (await call("GET", "api/info")).Regions || [];
    } catch (e) {
      showError(e);
    }
    const key = h("input", { type: "text", name: "AccessKeyId", autocomplete: "username", required: true, spellcheck: "false", class: "wide" });
    const secret = h("input", { type: "password", name: "SecretAccessKey", autocomplete: "current-password", required: true, class: "wide" });
    const region = select("Region", regions, regions[0]);
    const form = h("form", { class: "panel", id: "sign-in", "aria-label": "Sign in" },
      h("div", { class: "fields" },
        field("Access key ID", key),
        field("Secret access key", secret, "Used once to sign in; the console keeps only a session cookie."),
        field("Region", region)),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")));
    onSubmit(form, async () => {
      const s = await call("POST", "api/session", {
        json: { AccessKeyId: key.value.trim(), SecretAccessKey: secret.value, Region: region.value },
      });
      secret.value = "";
      setSignedIn(s);
      navigate(location.hash.startsWith("#/") ? location.hash : "#/", `Signed in as ${s.UserName} of account ${s.AccountId}.`);
    });
    show("Sign in", message ? h("p", { role: "alert" }, message) : null,
      h("p", {}, "Sign in with an access key of your account (the same credentials as for aws elb, boto3 or eulb)."),
      form);
    key.focus();
  }

  async function renderList() {
    const body = h("div", {}, h("p", {}, "Loading…"));
    show("Load balancers",
      h("p", {}, h("a", { href: "#/create" }, "Create load balancer")),
      body);
    const lbs = await describeLbs();
    const rows = lbs.map((lb) => h("tr", { dataset: { lb: lb.name } },
      h("th", { scope: "row" }, h("a", { href: `#/lb/${encodeURIComponent(lb.name)}` }, lb.name)),
      h("td", { class: "mono" }, lb.dns),
      h("td", {}, lb.zones.join(", ")),
      h("td", {}, lb.listeners.map((l) => `${l.protocol}:${l.port} → ${l.instanceProtocol}:${l.instancePort}`).join(", ")),
      h("td", { class: "num" }, lb.instances.length),
      h("td", {}, lb.scheme)));
    body.replaceChildren(table(`${lbs.length} load balancer${lbs.length === 1 ? "" : "s"} in ${session.Region}`,
      ["Name", "DNS name", "Zones", "Listeners", { text: "Instances", num: true }, "Scheme"], rows, { id: "lb-list" }));
  }

  const PROTOCOLS = ["HTTP", "HTTPS", "TCP", "SSL"];

  function listenerRow(removable) {
    const protocol = select("Protocol", PROTOCOLS, "HTTP");
    const port = numberInput("LoadBalancerPort", 80, 1, 65535);
    const instanceProtocol = select("InstanceProtocol", PROTOCOLS, "HTTP");
    const instancePort = numberInput("InstancePort", 80, 1, 65535);
    const cert = h("input", { type: "text", name: "SSLCertificateId", class: "wide" });
    protocol.addEventListener("change", () => {
      // The usual pairing; the API checks it either way.
      instanceProtocol.value = { HTTPS: "HTTP", SSL: "TCP" }[protocol.value] || protocol.value;
    });
    const row = h("div", { class: "listener-row" },
      field("Protocol", protocol),
      field("Load balancer port", port),
      field("Instance protocol", instanceProtocol),
      field("Instance port", instancePort),
      field("SSL certificate ARN (HTTPS, SSL)", cert));
    if (removable) {
      row.append(h("button", { type: "button", onclick: () => row.remove() }, "Remove listener"));
    }
    row.read = () => ({
      Protocol: protocol.value,
      LoadBalancerPort: port.value,
      InstanceProtocol: instanceProtocol.value,
      InstancePort: instancePort.value,
      SSLCertificateId: cert.value.trim(),
    });
    return row;
  }

  function zoneChooser(legend, chosen) {
    const boxes = (session.Zones || []).map((z) => checkbox(z, chosen.includes(z), { value: z, name: "zone" }));
    const set = h("fieldset", {}, h("legend", {}, legend),
      boxes.length ? boxes.map((b) => b.el) : h("p", { class: "empty" }, "No zones are defined in this region."));
    set.read = () => boxes.filter((b) => b.input.checked).map((b) => b.input.value);
    return set;
  }

  function renderCreate() {
    const name = h("input", { type: "text", name: "LoadBalancerName", required: true, maxlength: 32, spellcheck: "false" });
    const scheme = select("Scheme", [["internet-facing", "Internet-facing"], ["internal", "Internal"]], "internet-facing");
    const zones = zoneChooser("Availability zones", (session.Zones || []).slice(0, 1));
    const listeners = h("div", {}, listenerRow(false));
    const addListener = h("button", { type: "button", onclick: () => listeners.append(listenerRow(true)) }, "Add another listener");
    const form = h("form", { class: "panel", id: "create-lb" },
      h("div", { class: "fields" },
        field("Name", name, "1-32 letters, digits and hyphens."),
        field("Scheme", scheme)),
      zones,
      h("fieldset", {}, h("legend", {}, "Listeners"), listeners, h("div", { class: "actions" }, addListener)),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create load balancer")));
    onSubmit(form, async () => {
      const params = { LoadBalancerName: name.value.trim(), Scheme: scheme.value };
      listParams("AvailabilityZones", zones.read(), params);
      structParams("Listeners", Array.from(listeners.children).map((r) => r.read()), params);
      await elb("CreateLoadBalancer", params);
      const created = name.value.trim();
      navigate(`#/lb/${encodeURIComponent(created)}`, `Load balancer ${created} created.`);
    });
    show("Create load balancer", form);
  }

  // ------------------------------------------------------------ load balancer page

  function formatNumber(v, unit) {
    if (v === null || v === undefined) return "–";
    if (unit === "Bytes") {
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let i = 0;
      while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
      return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
    }
    return Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(1);
  }

  async function renderLb(name) {
    const generation = viewGeneration;
    show(name, h("p", {}, "Loading…"));
    const [lb, attrs, policies] = await Promise.all([describeLb(name), describeAttributes(name), describePolicies(name)]);
    if (generation !== viewGeneration) return;
    const reload = (message) => reloadLb(name, message);
    const sections = [
      ["summary", "Summary"], ["instances", "Instances"], ["metrics", "Metrics"], ["health-check", "Health check"],
      ["listeners", "Listeners"], ["policies", "Policies"], ["attributes", "Attributes"], ["zones", "Zones"], ["delete", "Delete"],
    ];
    show(name,
      h("nav", { class: "toc", "aria-label": "On this page" },
        h("ul", {}, sections.map(([id, text]) => h("li", {}, h("a", { href: `#${id}`, onclick: (ev) => jump(ev, id) }, text))))),
      summarySection(lb),
      instancesSection(lb, reload),
      metricsSection(lb),
      healthCheckSection(lb, reload),
      listenersSection(lb, policies, reload),
      policiesSection(lb, policies, reload),
      attributesSection(lb, attrs, reload),
      zonesSection(lb, reload),
      deleteSection(lb));
    startHealthPolling(lb.name);
    startMetrics(lb.name);
  }

  /** In-page links would change the route: scroll and focus instead. */
  function jump(ev, id) {
    ev.preventDefault();
    const target = $(id);
    if (target) {
      target.setAttribute("tabindex", "-1");
      target.focus();
      target.scrollIntoView({ block: "start" });
    }
  }

  function section(id, title, ...content) {
    return h("section", { id, "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), ...content);
  }

  function summarySection(lb) {
    return section("summary", "Summary",
      h("dl", { class: "summary" },
        h("dt", {}, "DNS name"), h("dd", { class: "mono", id: "lb-dns" }, lb.dns),
        h("dt", {}, "Scheme"), h("dd", {}, lb.scheme),
        h("dt", {}, "Zones"), h("dd", {}, lb.zones.join(", ") || "none"),
        h("dt", {}, "Created"), h("dd", {}, lb.created)));
  }

  function instancesSection(lb, reload) {
    const tbody = h("tbody", { id: "instance-rows" });
    const ids = h("input", { type: "text", name: "Instances", class: "wide", spellcheck: "false", required: true });
    const register = onSubmit(h("form", { class: "panel", id: "register-instances" },
      h("div", { class: "fields" },
        field("Instance IDs", ids, "Separate several with spaces or commas."),
        h("button", { type: "submit", class: "primary" }, "Register"))), async () => {
      const list = ids.value.split(/[\s,]+/).filter(Boolean);
      await elb("RegisterInstancesWithLoadBalancer", structParams("Instances", list.map((id) => ({ InstanceId: id })), { LoadBalancerName: lb.name }));
      await reload(`Registered ${list.join(", ")}.`);
    });
    const table_ = h("table", { id: "instances-table" },
      h("caption", {}, "Registered instances and their health (updates every 2 seconds)"),
      h("thead", {}, h("tr", {}, ["Instance", "State", "Reason", "Description", "Action"].map((x) => h("th", { scope: "col" }, x)))),
      tbody);
    fillInstances(tbody, lb.name, lb.instances.map((id) => ({ id, state: "", reason: "", description: "" })));
    return section("instances", "Instances", table_,
      h("p", { class: "sr-only", "aria-live": "polite", id: "health-announcer" }),
      register);
  }

  /** Updates the instance rows in place (focus stays where it is); announces changes. */
  function fillInstances(tbody, lbName, states) {
    const announcer = $("health-announcer");
    const existing = new Map(Array.from(tbody.querySelectorAll("tr[data-instance]")).map((r) => [r.dataset.instance, r]));
    const seen = new Set();
    for (const s of states) {
      seen.add(s.id);
      let row = existing.get(s.id);
      if (!row) {
        const deregister = h("button", { type: "button", class: "danger" }, "Deregister");
        deregister.setAttribute("aria-label", `Deregister ${s.id}`);
        deregister.addEventListener("click", () => submitting(row, async () => {
          await elb("DeregisterInstancesFromLoadBalancer", structParams("Instances", [{ InstanceId: s.id }], { LoadBalancerName: lbName }));
          await reloadLb(lbName, `Deregistered ${s.id}.`);
        }));
        row = h("tr", { dataset: { instance: s.id } },
          h("th", { scope: "row", class: "mono" }, s.id),
          h("td", { class: "state" }, "…"), h("td", {}), h("td", {}), h("td", {}, deregister));
        tbody.append(row);
      }
      const cells = row.children;
      const before = row.dataset.state || "";
      if (before !== s.state) {
        row.dataset.state = s.state;
        cells[1].textContent = s.state || "…";
        cells[1].className = `state state-${s.state}`;
        if (before && announcer) announcer.textContent = `${s.id} is now ${s.state}`;
      }
      cells[2].textContent = s.reason;
      cells[3].textContent = s.description;
    }
    for (const [id, row] of existing) if (!seen.has(id)) row.remove();
    const empty = tbody.querySelector("tr.none");
    if (states.length === 0 && !empty) tbody.append(h("tr", { class: "none" }, h("td", { colspan: 5, class: "empty" }, "No instances registered.")));
    if (states.length && empty) empty.remove();
  }

  function startHealthPolling(name) {
    const generation = viewGeneration;
    let busy = false;
    const poll = async () => {
      if (busy) return;
      busy = true;
      try {
        const states = await describeHealth(name);
        const tbody = $("instance-rows");
        if (generation === viewGeneration && tbody) fillInstances(tbody, name, states);
      } catch (e) {
        if (generation === viewGeneration) showError(e);
      } finally {
        busy = false;
      }
    };
    poll();
    every(HEALTH_POLL_MS, poll);
  }

  function metricsSection(lb) {
    return section("metrics", "Metrics (last hour, 10-second points)",
      h("div", { class: "plots", id: "plots" }, h("p", {}, "Loading…")),
      h("p", { class: "note", id: "metrics-note" }));
  }

  function startMetrics(name) {
    const generation = viewGeneration;
    const figures = new Map();
    const load = async () => {
      let data;
      try {
        data = await call("GET", `api/metrics?LoadBalancerName=${encodeURIComponent(name)}`);
      } catch (e) {
        if (generation === viewGeneration) showError(e);
        return;
      }
      const container = $("plots");
      if (generation !== viewGeneration || !container) return;
      $("metrics-note").textContent = data.Note || "";
      if (!figures.size) container.replaceChildren();
      // The axes start at the oldest value reported (at most an hour ago, at least
      // MIN_SPAN_POINTS ago), the same for every plot.
      const n = data.Timestamps.length;
      let start = Math.max(0, n - MIN_SPAN_POINTS);
      for (const m of data.Metrics) {
        const first = m.Values.findIndex((v) => v !== null);
        if (first >= 0) start = Math.min(start, first);
      }
      const timestamps = data.Timestamps.slice(start);
      for (const m of data.Metrics) {
        let fig = figures.get(m.Name);
        if (!fig) {
          fig = newFigure(m);
          figures.set(m.Name, fig);
          container.append(fig.el);
        }
        updateFigure(fig, { ...m, Values: m.Values.slice(start) }, timestamps, data.Period);
      }
    };
    load();
    every(METRICS_POLL_MS, load);
    const onResize = () => figures.forEach((f) => f.plot && f.plot.setSize(plotSize(f.plotBox)));
    window.addEventListener("resize", onResize);
    viewPlots.push({ destroy: () => window.removeEventListener("resize", onResize) });
  }

  function newFigure(m) {
    const captionId = newId("cap");
    const figures = h("span", { class: "figures" });
    const plotBox = h("div", { class: "plot", role: "img" });
    plotBox.setAttribute("aria-labelledby", captionId);
    const el = h("figure", { class: "metric", dataset: { metric: m.Name } },
      h("figcaption", { id: captionId }, m.Label, figures),
      plotBox);
    return { el, figures, plotBox, plot: null };
  }

  function plotSize(box) {
    return { width: Math.max(260, box.clientWidth || 420), height: 180 };
  }

  function updateFigure(fig, m, timestamps, period) {
    const present = m.Values.filter((v) => v !== null);
    const latest = present.length ? present[present.length - 1] : null;
    const peak = present.length ? Math.max(...present) : null;
    const total = present.reduce((a, b) => a + b, 0);
    const per = m.Statistic === "Sum" ? ` per ${period} s` : "";
    fig.el.dataset.points = String(present.length);
    fig.el.dataset.latest = latest === null ? "" : String(latest);
    fig.el.dataset.peak = peak === null ? "" : String(peak);
    fig.el.dataset.total = String(total);
    if (!present.length) {
      fig.figures.textContent = " — no data reported in the last hour";
      if (fig.plot) { fig.plot.destroy(); fig.plot = null; }
      fig.plotBox.replaceChildren(h("p", { class: "nodata" }, "No data reported yet."));
      return;
    }
    const totalText = m.Statistic === "Sum" ? `, total ${formatNumber(total, m.Unit)}` : "";
    fig.figures.textContent = ` — latest ${formatNumber(latest, m.Unit)}${per}, peak ${formatNumber(peak, m.Unit)}${totalText}`;
    const series = [timestamps, m.Values];
    if (fig.plot) {
      fig.plot.setData(series);
      return;
    }
    if (typeof uPlot !== "function") {
      fig.plotBox.replaceChildren(h("p", { class: "nodata" }, "The plotting library did not load."));
      return;
    }
    fig.plotBox.replaceChildren();
    fig.plot = new uPlot({
      ...plotSize(fig.plotBox),
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      series: [
        {},
        { label: m.Label, stroke: "#0b5cad", width: 2, fill: "rgba(11, 92, 173, 0.12)", spanGaps: false,
          value: (u, v) => formatNumber(v, m.Unit),
          // A value between two gaps has no line to draw: mark it with a dot.
          points: { show: false, size: 7, fill: "#0b5cad", filter: (u, si) => isolated(u.data[si]) } },
      ],
      axes: [
        { stroke: "#57606a", grid: { stroke: "#eaeef2" } },
        { stroke: "#57606a", grid: { stroke: "#eaeef2" }, size: 64, values: (u, vals) => vals.map((v) => formatNumber(v, m.Unit)) },
      ],
    }, series, fig.plotBox);
    viewPlots.push(fig.plot);
  }

  /** Indices of values with no value on either side (null when there are none). */
  function isolated(values) {
    const out = [];
    for (let i = 0; i < values.length; i += 1) {
      const v = values[i];
      if (v !== null && (i === 0 || values[i - 1] === null) && (i === values.length - 1 || values[i + 1] === null)) out.push(i);
    }
    return out.length ? out : null;
  }

  function healthCheckSection(lb, reload) {
    const hc = lb.healthCheck;
    const target = h("input", { type: "text", name: "Target", value: hc.target, required: true, spellcheck: "false" });
    const interval = numberInput("Interval", hc.interval, 5, 300);
    const timeout = numberInput("Timeout", hc.timeout, 2, 60);
    const unhealthy = numberInput("UnhealthyThreshold", hc.unhealthy, 2, 10);
    const healthy = numberInput("HealthyThreshold", hc.healthy, 2, 10);
    const form = onSubmit(h("form", { class: "panel", id: "health-check" },
      h("div", { class: "fields" },
        field("Target", target, "TCP:port, SSL:port, HTTP:port/path or HTTPS:port/path"),
        field("Interval (s)", interval),
        field("Timeout (s)", timeout),
        field("Unhealthy threshold", unhealthy),
        field("Healthy threshold", healthy)),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save health check"))), async () => {
      await elb("ConfigureHealthCheck", {
        LoadBalancerName: lb.name,
        "HealthCheck.Target": target.value.trim(),
        "HealthCheck.Interval": interval.value,
        "HealthCheck.Timeout": timeout.value,
        "HealthCheck.UnhealthyThreshold": unhealthy.value,
        "HealthCheck.HealthyThreshold": healthy.value,
      });
      await reload("Health check saved.");
    });
    return section("health-check", "Health check", form);
  }

  /** Checkboxes for choosing policies; `read()` gives the chosen names in order. */
  function policyChooser(legend, available, chosen) {
    const boxes = available.map((p) => checkbox(p, chosen.includes(p), { value: p }));
    const set = h("fieldset", {}, h("legend", {}, legend),
      boxes.length ? boxes.map((b) => b.el) : h("p", { class: "empty" }, "This load balancer has no policies yet."));
    set.read = () => boxes.filter((b) => b.input.checked).map((b) => b.input.value);
    return set;
  }

  function listenersSection(lb, policies, reload) {
    const names = policies.map((p) => p.name);
    const rows = lb.listeners.map((l) => {
      const del = h("button", { type: "button", class: "danger", "aria-label": `Delete listener on port ${l.port}` }, "Delete");
      const row = h("tr", { dataset: { port: l.port } },
        h("th", { scope: "row" }, `${l.protocol}:${l.port}`),
        h("td", {}, `${l.instanceProtocol}:${l.instancePort}`),
        h("td", { class: "mono" }, l.cert || "–"),
        h("td", {}, l.policies.join(", ") || "–"),
        h("td", {}, del));
      del.addEventListener("click", () => submitting(row, async () => {
        await elb("DeleteLoadBalancerListeners", listParams("LoadBalancerPorts", [l.port], { LoadBalancerName: lb.name }));
        await reload(`Listener on port ${l.port} deleted.`);
      }));
      return row;
    });
    const add = listenerRow(false);
    const addForm = onSubmit(h("form", { class: "panel", id: "add-listener" },
      h("h3", {}, "Add a listener"), add,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add listener"))), async () => {
      await elb("CreateLoadBalancerListeners", structParams("Listeners", [add.read()], { LoadBalancerName: lb.name }));
      await reload("Listener added.");
    });
    const policyForms = lb.listeners.map((l) => {
      const chooser = policyChooser(`Policies of the listener on port ${l.port}`, names, l.policies);
      return onSubmit(h("form", { class: "panel", dataset: { listenerPolicies: l.port } }, chooser,
        h("div", { class: "actions" }, h("button", { type: "submit" }, `Apply to port ${l.port}`))), async () => {
        await elb("SetLoadBalancerPoliciesOfListener",
          listParams("PolicyNames", chooser.read(), { LoadBalancerName: lb.name, LoadBalancerPort: l.port }));
        await reload(`Policies of the listener on port ${l.port} set.`);
      });
    });
    return section("listeners", "Listeners",
      table("Listeners", ["Front end", "Back end", "Certificate", "Policies", "Action"], rows, { id: "listeners-table" }),
      addForm,
      h("h3", {}, "Listener policies (stickiness, SSL negotiation, proxy protocol)"),
      policyForms.length ? policyForms : h("p", { class: "empty" }, "No listeners."));
  }

  function policiesSection(lb, policies, reload) {
    const rows = policies.map((p) => {
      const del = h("button", { type: "button", class: "danger", "aria-label": `Delete policy ${p.name}` }, "Delete");
      const row = h("tr", { dataset: { policy: p.name } },
        h("th", { scope: "row" }, p.name),
        h("td", {}, p.type),
        h("td", { class: "mono" }, p.attributes.map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
        h("td", {}, del));
      del.addEventListener("click", () => submitting(row, async () => {
        await elb("DeleteLoadBalancerPolicy", { LoadBalancerName: lb.name, PolicyName: p.name });
        await reload(`Policy ${p.name} deleted.`);
      }));
      return row;
    });

    const lbName = h("input", { type: "text", name: "PolicyName", required: true });
    const expiry = h("input", { type: "number", name: "CookieExpirationPeriod", min: 0 });
    const lbCookie = onSubmit(h("form", { class: "panel", id: "lb-cookie-policy" },
      h("h3", {}, "Load balancer cookie stickiness"),
      h("div", { class: "fields" }, field("Policy name", lbName),
        field("Cookie expiration (s)", expiry, "Empty: the cookie lasts as long as the browser session."),
        h("button", { type: "submit" }, "Create"))), async () => {
      await elb("CreateLBCookieStickinessPolicy", { LoadBalancerName: lb.name, PolicyName: lbName.value.trim(), CookieExpirationPeriod: expiry.value || undefined });
      await reload(`Policy ${lbName.value.trim()} created.`);
    });

    const appName = h("input", { type: "text", name: "PolicyName", required: true });
    const cookie = h("input", { type: "text", name: "CookieName", required: true });
    const appCookie = onSubmit(h("form", { class: "panel", id: "app-cookie-policy" },
      h("h3", {}, "Application cookie stickiness"),
      h("div", { class: "fields" }, field("Policy name", appName), field("Application cookie name", cookie),
        h("button", { type: "submit" }, "Create"))), async () => {
      await elb("CreateAppCookieStickinessPolicy", { LoadBalancerName: lb.name, PolicyName: appName.value.trim(), CookieName: cookie.value.trim() });
      await reload(`Policy ${appName.value.trim()} created.`);
    });

    const otherName = h("input", { type: "text", name: "PolicyName", required: true });
    const type = h("select", { name: "PolicyTypeName" }, h("option", { value: "" }, "Loading types…"));
    describePolicyTypes().then((types) => {
      type.replaceChildren(...types.map((t) => h("option", { value: t }, t)));
    }).catch(showError);
    const attrs = h("textarea", { name: "PolicyAttributes", spellcheck: "false" });
    const other = onSubmit(h("form", { class: "panel", id: "other-policy" },
      h("h3", {}, "Other policy"),
      h("div", { class: "fields" }, field("Policy name", otherName), field("Policy type", type),
        field("Attributes", attrs, "One Name=Value per line.")),
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Create"))), async () => {
      const pairs = attrs.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
        const eq = l.indexOf("=");
        return eq < 0 ? { AttributeName: l, AttributeValue: "" } : { AttributeName: l.slice(0, eq).trim(), AttributeValue: l.slice(eq + 1).trim() };
      });
      await elb("CreateLoadBalancerPolicy", structParams("PolicyAttributes", pairs,
        { LoadBalancerName: lb.name, PolicyName: otherName.value.trim(), PolicyTypeName: type.value }));
      await reload(`Policy ${otherName.value.trim()} created.`);
    });

    const names = policies.map((p) => p.name);
    const backendPort = numberInput("InstancePort", (lb.listeners[0] || {}).instancePort || 80, 1, 65535);
    const backendChooser = policyChooser("Policies", names, []);
    const backend = onSubmit(h("form", { class: "panel", id: "backend-policies" },
      h("h3", {}, "Back-end server policies"),
      h("p", {}, "Current: ", lb.backends.length ? lb.backends.map((b) => `port ${b.port}: ${b.policies.join(", ")}`).join("; ") : "none"),
      h("div", { class: "fields" }, field("Instance port", backendPort)), backendChooser,
      h("div", { class: "actions" }, h("button", { type: "submit" }, "Set back-end policies"))), async () => {
      await elb("SetLoadBalancerPoliciesForBackendServer",
        listParams("PolicyNames", backendChooser.read(), { LoadBalancerName: lb.name, InstancePort: backendPort.value }));
      await reload(`Back-end policies of port ${backendPort.value} set.`);
    });

    return section("policies", "Policies",
      table("Policies of this load balancer", ["Name", "Type", "Attributes", "Action"], rows, { id: "policies-table" }),
      lbCookie, appCookie, other, backend);
  }

  function attributesSection(lb, a, reload) {
    const crossZone = checkbox("Cross-zone load balancing", a.crossZone);
    const draining = checkbox("Connection draining", a.drainingEnabled);
    const drainingTimeout = numberInput("ConnectionDraining.Timeout", a.drainingTimeout, 1, 3600);
    const idle = numberInput("ConnectionSettings.IdleTimeout", a.idleTimeout, 1, 3600);
    const log = checkbox("Access logs", a.logEnabled);
    const bucket = h("input", { type: "text", name: "AccessLog.S3BucketName", value: a.logBucket });
    const prefix = h("input", { type: "text", name: "AccessLog.S3BucketPrefix", value: a.logPrefix });
    const interval = select("AccessLog.EmitInterval", [["5", "5 minutes"], ["60", "60 minutes"]], a.logInterval);
    const form = onSubmit(h("form", { class: "panel", id: "attributes-form" },
      crossZone.el,
      h("fieldset", {}, h("legend", {}, "Connections"),
        draining.el,
        h("div", { class: "fields" }, field("Draining timeout (s)", drainingTimeout), field("Idle timeout (s)", idle))),
      h("fieldset", {}, h("legend", {}, "Access logs"),
        log.el,
        h("div", { class: "fields" }, field("S3 bucket", bucket), field("Prefix", prefix), field("Interval", interval))),
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save attributes"))), async () => {
      const p = { LoadBalancerName: lb.name };
      const at = (k, v) => { p[`LoadBalancerAttributes.${k}`] = v; };
      at("CrossZoneLoadBalancing.Enabled", crossZone.input.checked);
      at("ConnectionDraining.Enabled", draining.input.checked);
      at("ConnectionDraining.Timeout", drainingTimeout.value);
      at("ConnectionSettings.IdleTimeout", idle.value);
      at("AccessLog.Enabled", log.input.checked);
      if (log.input.checked || bucket.value.trim()) {
        at("AccessLog.S3BucketName", bucket.value.trim());
        at("AccessLog.EmitInterval", interval.value);
        if (prefix.value.trim()) at("AccessLog.S3BucketPrefix", prefix.value.trim());
      }
      await elb("ModifyLoadBalancerAttributes", p);
      await reload("Attributes saved.");
    });
    return section("attributes", "Attributes", form);
  }

  function zonesSection(lb, reload) {
    const chooser = zoneChooser("Zones this load balancer serves", lb.zones);
    const form = onSubmit(h("form", { class: "panel", id: "zones-form" }, chooser,
      h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Save zones"))), async () => {
      const want = chooser.read();
      const add = want.filter((z) => !lb.zones.includes(z));
      const remove = lb.zones.filter((z) => !want.includes(z));
      if (add.length) await elb("EnableAvailabilityZonesForLoadBalancer", listParams("AvailabilityZones", add, { LoadBalancerName: lb.name }));
      if (remove.length) await elb("DisableAvailabilityZonesForLoadBalancer", listParams("AvailabilityZones", remove, { LoadBalancerName: lb.name }));
      await reload(add.length || remove.length ? "Zones saved." : "No change.");
    });
    return section("zones", "Zones", form);
  }

  function deleteSection(lb) {
    const confirmButton = h("button", { type: "button", class: "danger primary", id: "confirm-delete" }, "Delete");
    const cancel = h("button", { type: "button" }, "Cancel");
    const dialog = h("dialog", { id: "delete-dialog", "aria-labelledby": "delete-dialog-h" },
      h("h2", { id: "delete-dialog-h" }, `Delete ${lb.name}?`),
      h("p", {}, "Its listeners stop answering and its DNS name stops resolving. Registered instances are not affected."),
      h("div", { class: "actions" }, confirmButton, cancel));
    const open = h("button", { type: "button", class: "danger", id: "delete-lb" }, "Delete load balancer…");
    open.addEventListener("click", () => { dialog.showModal(); cancel.focus(); });
    cancel.addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => open.focus());
    confirmButton.addEventListener("click", () => submitting(dialog, async () => {
      await elb("DeleteLoadBalancer", { LoadBalancerName: lb.name });
      dialog.close();
      navigate("#/", `Load balancer ${lb.name} deleted.`);
    }));
    return section("delete", "Delete", open, dialog);
  }

  // ------------------------------------------------------------ administrators

  async function renderAdmin() {
    const generation = viewGeneration;
    const body = h("div", { id: "admin-body" }, h("p", {}, "Loading…"));
    show("Servos and zones", body);
    const load = async () => {
      let data;
      try {
        data = await call("GET", "api/admin");
      } catch (e) {
        if (generation === viewGeneration) showError(e);
        return;
      }
      if (generation !== viewGeneration) return;
      const r = data.Readiness;
      body.replaceChildren(
        h("h2", {}, "Readiness: ", h("span", { class: r.Ready ? "ok" : "bad", id: "readiness" }, r.Ready ? "Ready" : "Not ready")),
        h("ul", {}, r.Checks.map((c) => h("li", {}, h("span", { class: c.Ok ? "ok" : "bad" }, c.Ok ? "OK" : "Problem"), ` ${c.Name}: ${c.Detail}`))),
        h("h2", {}, "Zones"),
        table(`Each load balancer gets ${data.ServosPerZone} live servo(s) per zone`,
          ["Zone", "Region", { text: "Servos", num: true }, { text: "Live", num: true }, { text: "Assignments", num: true }, { text: "Capacity (live)", num: true }],
          data.Zones.map((z) => h("tr", {},
            h("th", { scope: "row" }, z.Name), h("td", {}, z.Region), h("td", { class: "num" }, z.Servos),
            h("td", { class: "num" }, z.LiveServos), h("td", { class: "num" }, z.Assignments),
            h("td", { class: "num" }, z.Capacity === null ? "unlimited" : z.Capacity)))),
        h("h2", {}, "Servos"),
        table("Servos (updates every 5 seconds)",
          ["Servo", "Zone", "State", "Addresses", { text: "Load balancers / capacity", num: true }, "Last heartbeat", { text: "New flows", num: true }, { text: "Packets", num: true }],
          data.Servos.map((s) => h("tr", { dataset: { servo: s.ServoId } },
            h("th", { scope: "row" }, s.ServoId), h("td", {}, s.Zone),
            h("td", { class: s.Live ? "ok state" : "bad state" }, s.Live ? "Live" : (s.Registered ? "Down" : "Not registered")),
            h("td", { class: "mono" }, [...(s.PublicAddresses || []), ...(s.PrivateAddresses || [])].join(", ")),
            h("td", { class: "num" }, `${s.LoadBalancers.length} / ${s.Capacity === null ? "∞" : s.Capacity}`),
            h("td", {}, s.LastHeartbeat || "never"),
            h("td", { class: "num" }, formatNumber(s.Counters ? s.Counters.NewFlows : null)),
            h("td", { class: "num" }, formatNumber(s.Counters ? s.Counters.Packets : null))))));
    };
    await load();
    every(ADMIN_POLL_MS, load);
  }

  // ------------------------------------------------------------ routing

  async function route() {
    const hash = location.hash || "#/";
    if (!hash.startsWith("#/")) return; // in-page anchors
    stopView();
    clearMessages();
    if (carriedNotice) {
      notice(carriedNotice);
      carriedNotice = null;
    }
    if (!session) {
      renderSignIn();
      return;
    }
    const parts = hash.slice(2).split("/").map((p) => decodeURIComponent(p));
    try {
      if (parts[0] === "") await renderList();
      else if (parts[0] === "create") renderCreate();
      else if (parts[0] === "lb" && parts[1]) await renderLb(parts[1]);
      else if (parts[0] === "admin" && session.Admin) await renderAdmin();
      else show("Not found", h("p", {}, h("a", { href: "#/" }, "Back to the load balancers")));
    } catch (e) {
      showError(e);
    }
  }

  async function start() {
    $("skip").addEventListener("click", (ev) => { ev.preventDefault(); $("main").focus(); });
    $("sign-out").addEventListener("click", async () => {
      try {
        await call("DELETE", "api/session");
      } catch (e) {
        // Signed out either way: the cookie is gone or the session was already over.
      }
      setSignedIn(null);
      navigate("#/", "Signed out.");
    });
    window.addEventListener("hashchange", () => route());
    try {
      setSignedIn(await fetch("api/session", { credentials: "same-origin", cache: "no-store" })
        .then((r) => (r.ok ? r.json() : null)));
    } catch (e) {
      setSignedIn(null);
    }
    route();
  }

  start();
})();
