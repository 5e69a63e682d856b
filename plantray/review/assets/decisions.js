/* plantray review page: where decisions are kept and how they leave the page.
 *
 * - localStorage, one key per card of the site (two tabs never overwrite each other's work), written the moment a
 *   decision is made; a write that fails is reported through the page's warn callback, never swallowed;
 * - the decisions file (RFC 4180 CSV) and its parser (Import);
 * - `plantray review serve`: when the page is served by it, the decisions file is written there after every change.
 * No DOM here: the page (review.js) passes callbacks.
 */
(function () {
  "use strict";

  var DECISIONS = ["accepted", "corrected", "rejected", "not a plant", "unsure"];
  var HEADER = ["identificationID", "decision", "scientificName", "identifiedBy", "dateIdentified",
                "identificationRemarks"];

  // Stored compactly (one origin holds ~5 million characters for every file:// site): ~140 per decision.
  function pack(d) {
    var o = {d: d.decision, n: d.scientificName || undefined, by: d.identifiedBy, at: d.dateIdentified,
             r: d.remarks || undefined, ids: d.ids};
    return JSON.stringify(o);
  }

  function unpack(text) {
    var o = JSON.parse(text);
    if (!o || DECISIONS.indexOf(o.d) < 0) return null;
    var d = {decision: o.d, scientificName: o.n || "", identifiedBy: o.by || "", dateIdentified: o.at || "",
             remarks: o.r || ""};
    if (Array.isArray(o.ids)) d.ids = o.ids;
    return d;
  }

  // warn(message or null, key): shows or clears a message on the page; onChange(): after every change.
  function Store(siteKey, warn) {
    this.prefix = "plantray-review:" + siteKey + ":";
    this.warn = warn;
    this.onChange = null;
    this.decisions = new Map();
    this.unsaved = new Set();
    this.ok = true;
    try {
      var probe = this.prefix + "probe";
      localStorage.setItem(probe, "1");
      localStorage.removeItem(probe);
      for (var i = 0; i < localStorage.length; i++) {
        var k = localStorage.key(i);
        if (k && k.indexOf(this.prefix + "d:") === 0) {
          try {
            var d = unpack(localStorage.getItem(k));
            if (d) this.decisions.set(k.slice(this.prefix.length + 2), d);
          } catch (e) { /* a value another program wrote: not ours */ }
        }
      }
    } catch (e) {
      this.ok = false;
      warn("This browser does not let the page save decisions (" + e.name + "). Decisions made now live only " +
               "in this tab: export them before you close it.", "storage");
    }
  }

  Store.prototype.get = function (key) { return this.decisions.get(key) || null; };

  Store.prototype.set = function (key, decision) {
    if (decision) this.decisions.set(key, decision); else this.decisions.delete(key);
    try {
      if (!this.ok) throw new Error("storage unavailable");
      if (decision) localStorage.setItem(this.prefix + "d:" + key, pack(decision));
      else localStorage.removeItem(this.prefix + "d:" + key);
      this.unsaved.delete(key);
    } catch (e) {
      this.unsaved.add(key);
    }
    this.warnUnsaved();
    if (this.onChange) this.onChange();
  };

  Store.prototype.warnUnsaved = function () {
    this.warn(this.unsaved.size ? this.unsaved.size + " decision(s) could not be saved in this browser (storage full " +
             "or blocked). They live only in this tab: export the decisions now." : null, "unsaved");
  };

  // Another tab of the same site changed a decision.
  Store.prototype.onStorage = function (event) {
    if (!event.key || event.key.indexOf(this.prefix + "d:") !== 0) return null;
    var key = event.key.slice(this.prefix.length + 2);
    if (event.newValue === null) this.decisions.delete(key);
    else {
      try { var d = unpack(event.newValue); if (d) this.decisions.set(key, d); } catch (e) { return null; }
    }
    return key;
  };

  Store.prototype.setting = function (name, value) {
    var k = "plantray-review:" + name;
    try {
      if (value === undefined) return localStorage.getItem(k);
      localStorage.setItem(k, value);
    } catch (e) { return null; }
    return value;
  };


  // ---------------------------------------------------------------- the decisions file

  function csvField(value) {
    var s = value === undefined || value === null ? "" : String(value);
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  // The decisions file from rows of fields (HEADER's order): UTF-8 text, CRLF line ends.
  function toCsv(rows) {
    var lines = [HEADER.join(",")].concat(rows.map(function (r) { return r.map(csvField).join(","); }));
    return lines.join("\r\n") + "\r\n";
  }

  // RFC 4180: quoted fields may hold commas, doubled quotes and line breaks.
  function parseCsv(text) {
    var rows = [], row = [], field = "", i = 0, quoted = false;
    text = text.replace(/^\ufeff/, "");
    while (i < text.length) {
      var ch = text[i];
      if (quoted) {
        if (ch === '"' && text[i + 1] === '"') { field += '"'; i += 2; continue; }
        if (ch === '"') { quoted = false; i += 1; continue; }
        field += ch; i += 1; continue;
      }
      if (ch === '"' && field === "") { quoted = true; i += 1; continue; }
      if (ch === ",") { row.push(field); field = ""; i += 1; continue; }
      if (ch === "\r" || ch === "\n") {
        row.push(field); field = ""; rows.push(row); row = [];
        i += ch === "\r" && text[i + 1] === "\n" ? 2 : 1; continue;
      }
      field += ch; i += 1;
    }
    if (field !== "" || row.length) { row.push(field); rows.push(row); }
    return rows;
  }

  // ---------------------------------------------------------------- plantray review serve

  // csvText(): the decisions file now; state(text): what the page says about the server; warn as Store's.
  function Server(csvText, state, warn) {
    this.csvText = csvText;
    this.state = state;
    this.warn = warn;
    this.on = false;
    this.path = "";
    this.timer = null;
    this.busy = false;
    this.again = false;
  }

  Server.prototype.detect = function () {
    var self = this;
    if (!/^https?:$/.test(location.protocol) || !window.fetch) return;  // file:// or no fetch: the static site
    fetch("_plantray/serve", {cache: "no-store"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (info) {
        if (!info || typeof info.decisions !== "string") return;
        self.on = true;
        self.path = info.decisions;
        self.state("Writing " + info.decisions);
        self.push();
      })
      .catch(function () { /* a static host: nothing to write to */ });
  };

  Server.prototype.schedule = function () {
    var self = this;
    if (!this.on) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.push(); }, 300);
  };

  Server.prototype.push = function () {
    var self = this;
    if (this.busy) { this.again = true; return; }
    this.busy = true;
    fetch("_plantray/decisions", {method: "PUT", body: this.csvText(),
                                  headers: {"Content-Type": "text/csv; charset=utf-8", "X-Plantray-Review": "1"}})
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        self.warn(null, "server");
        self.state("Saved to " + self.path + " at " + new Date().toLocaleTimeString());
      })
      .catch(function (e) {
        self.warn("The server did not write the decisions file (" + e.message + "). Your decisions are still " +
                  "saved in this browser; use Export decisions.", "server");
      })
      .then(function () {
        self.busy = false;
        if (self.again) { self.again = false; self.push(); }
      });
  };

  window.PlantrayDecisions = {DECISIONS: DECISIONS, HEADER: HEADER, Store: Store, toCsv: toCsv, parseCsv: parseCsv,
                              Server: Server};
})();
