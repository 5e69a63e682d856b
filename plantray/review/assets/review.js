/* plantray review page: cards from data/page-*.js, filters, keyboard decisions (kept by decisions.js).
 *
 * Rules this file keeps:
 * - Every string from the predictions is shown with textContent (or as an attribute value), never parsed
 *   as HTML; a link is made only for http(s), s3 and relative URLs (never javascript:, data: ...).
 * - Data files are <script> tags (fetch() of local files is refused by browsers); the first one is shown
 *   as soon as it has loaded, the others load behind it.
 */
(function () {
  "use strict";

  var D = window.PlantrayDecisions;  // decisions.js
  var DECISIONS = D.DECISIONS, HEADER = D.HEADER;
  var NOT_A_LABEL = "Not in the model's labels: plantray review apply refuses this name unless the labels or a " +
    "checklist given with --checklist have it.";
  var AGREEMENT_RANK = {"different": 0, "same genus": 1, "no publisher name": 2, "same species": 4};

  var site = null;          // data/site.js
  var cards = [];           // every loaded card, by position (card.n)
  var byKey = new Map();    // card key -> card
  var idToKey = new Map();  // identificationID -> card key (import)
  var pagesLoaded = 0;
  var earlier = 0;          // loaded cards a person decided already (their predictions were review apply's OUTPUT)
  var labels = [];
  var labelSet = new Set();
  var view = [];            // positions of the cards matching the filters, in display order
  var page = 0;
  var focusKey = null;
  var undoStack = [];
  var refreshTimer = null;
  var store = null;         // D.Store: the decisions
  var server = null;        // D.Server: plantray review serve, when it serves the page

  // ---------------------------------------------------------------- helpers

  function $(id) { return document.getElementById(id); }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function isoNow() { return new Date().toISOString().replace(/\.\d{3}Z$/, "Z"); }

  function pct(x) { return x === undefined || x === null ? "–" : (100 * x).toFixed(x >= 0.995 || x < 0.1 ? 1 : 0) + "%"; }

  // A link target the page may open: http(s) and s3 URLs as they are, relative paths written as ./ or ../
  // (plantray writes local images so); anything else, javascript: and data: included, is no link.
  function safeLink(raw) {
    if (typeof raw !== "string" || raw.length === 0 || raw.length > 8192) return null;
    if (/[\u0000-\u0020\u007f]/.test(raw)) return null;     // browsers drop these inside URLs: "java\tscript:"
    if (/^(https?|s3):\/\/[^\/]/i.test(raw)) return raw;
    if (/^\.\.?\//.test(raw)) return raw;
    return null;
  }

  function alertBox(message, key) {
    var box = $("alerts");
    if (key) {
      var old = box.querySelector('[data-key="' + key + '"]');
      if (old) old.remove();
    }
    if (!message) return;
    var p = el("p", "alert", message);
    if (key) p.setAttribute("data-key", key);
    box.appendChild(p);
  }

  function status(message) { $("status").textContent = message || ""; }

  // ---------------------------------------------------------------- data loading

  function loadScript(src, onerror) {
    var s = document.createElement("script");
    s.src = src;
    s.onerror = onerror;
    document.body.appendChild(s);
  }

  function pageFile(n) { return "data/page-" + String(n).padStart(6, "0") + ".js"; }

  function loadNextPage() {
    if (pagesLoaded >= site.pages) return;
    var n = pagesLoaded;
    loadScript(pageFile(n), function () {
      alertBox("Card file " + pageFile(n) + " is missing: the site is incomplete; rebuild it with plantray review build.",
               "missing");
    });
  }

  function onPage(n, pageCards) {
    for (var i = 0; i < pageCards.length; i++) {
      var card = pageCards[i];
      cards[card.n] = card;
      byKey.set(card.key, card);
      if (card.reviewed) earlier += 1;
      (card.ids || []).forEach(function (id) { idToKey.set(id, card.key); });
    }
    pagesLoaded += 1;
    if (pagesLoaded === 1) {
      loadScript("data/labels.js");
      render(true);
    } else if (pagesLoaded === site.pages) {
      clearTimeout(refreshTimer);
      refreshView(false);
    } else if (!refreshTimer) {  // while files arrive, the view is recomputed at most every half second
      refreshTimer = setTimeout(function () { refreshTimer = null; refreshView(false); }, 500);
    }
    updateStatus();
    if (pagesLoaded >= site.pages) return;
    // The other files load once the page has loaded with its first one: a script added before the load event
    // would hold that event (and the browser's "loading" state) until the last card file arrived.
    if (document.readyState === "complete") setTimeout(loadNextPage, 0);
    else window.addEventListener("load", function () { setTimeout(loadNextPage, 0); }, {once: true});
  }

  function updateStatus() {
    var loaded = cards.length;
    status(pagesLoaded < site.pages ? "Loading cards: " + loaded.toLocaleString() + " of " +
           site.cards.toLocaleString() + " (filters and sorting apply to the cards loaded)" : "");
    updateProgress();
  }

  // ---------------------------------------------------------------- filters and view

  function filters() {
    var min = parseFloat($("f-conf-min").value), max = parseFloat($("f-conf-max").value);
    return {
      reviewed: $("f-reviewed").value, kind: $("f-kind").value, agreement: $("f-agreement").value,
      species: $("f-species").value.trim().toLowerCase(), sort: $("f-sort").value,
      min: isNaN(min) ? null : min / 100, max: isNaN(max) ? null : max / 100,
    };
  }

  // The decision a card shows: the one made in this browser, else the one a person made before (applied to
  // the predictions this site was built from, by plantray review apply). Only this browser's are exported.
  function decisionOf(card) { return store.get(card.key) || card.reviewed || null; }

  function matches(card, f) {
    if (!card) return false;
    var d = decisionOf(card);
    if (f.reviewed === "todo" && d) return false;
    if (f.reviewed === "done" && !d) return false;
    if (DECISIONS.indexOf(f.reviewed) >= 0 && (!d || d.decision !== f.reviewed)) return false;
    if (f.kind !== "all" && card.kind !== f.kind) return false;
    if (f.agreement !== "all" && card.agreement !== f.agreement) return false;
    if (f.species && (card.name || "").toLowerCase().indexOf(f.species) < 0) return false;
    if (f.min !== null && !(card.confidence >= f.min)) return false;
    if (f.max !== null && !(card.confidence <= f.max)) return false;
    return true;
  }

  function agreementRank(card) {
    return Object.prototype.hasOwnProperty.call(AGREEMENT_RANK, card.agreement) ? AGREEMENT_RANK[card.agreement] : 3;
  }

  function compare(f) {
    var conf = function (c) { return typeof c.confidence === "number" ? c.confidence : -1; };
    var last = function (c) { return c.kind === "errors" ? 1 : 0; };
    switch (f.sort) {
      case "conf-asc": return function (a, b) { return last(a) - last(b) || conf(a) - conf(b) || a.n - b.n; };
      case "conf-desc": return function (a, b) { return last(a) - last(b) || conf(b) - conf(a) || a.n - b.n; };
      case "species": return function (a, b) {
        return last(a) - last(b) || (a.name || "\uffff").localeCompare(b.name || "\uffff") || conf(a) - conf(b) || a.n - b.n;
      };
      case "agreement": return function (a, b) {
        return last(a) - last(b) || agreementRank(a) - agreementRank(b) || conf(a) - conf(b) || a.n - b.n;
      };
      default: return null;  // the build's review order: positions as loaded
    }
  }

  function computeView() {
    var f = filters(), out = [];
    for (var i = 0; i < cards.length; i++) if (matches(cards[i], f)) out.push(cards[i]);
    var cmp = compare(f);
    if (cmp) out.sort(cmp);
    return out.map(function (c) { return c.n; });
  }

  function pageSize() { return parseInt($("f-page-size").value, 10) || 48; }

  function pageKeys() {
    var size = pageSize();
    return view.slice(page * size, (page + 1) * size).map(function (n) { return cards[n].key; });
  }

  // Recomputes the view; re-renders the cards only when the current page's cards changed (new cards arriving
  // behind the page never move the one being reviewed). reset: back to the first page.
  function refreshView(reset) {
    var before = pageKeys().join("\u0000");
    view = computeView();
    if (reset) page = 0;
    page = Math.max(0, Math.min(page, Math.ceil(view.length / pageSize()) - 1));
    var editing = document.activeElement && document.activeElement.closest && document.activeElement.closest("#cards input");
    if (reset || (pageKeys().join("\u0000") !== before && !editing)) renderCards();
    renderPager();
  }

  function render(reset) { refreshView(reset); }

  // ---------------------------------------------------------------- rendering

  function renderPager() {
    var size = pageSize(), pages = Math.max(1, Math.ceil(view.length / size));
    document.querySelectorAll(".pager").forEach(function (nav) {
      nav.querySelector(".page-label").textContent = "Page " + (page + 1) + " of " + pages;
      nav.querySelector(".prev").disabled = page === 0;
      nav.querySelector(".next").disabled = page >= pages - 1;
    });
    $("matching").textContent = view.length.toLocaleString() + " of " + cards.length.toLocaleString() + " cards shown";
  }

  function renderCards() {
    var main = $("cards");
    main.textContent = "";
    var keys = pageKeys();
    if (!keys.length) {
      main.appendChild(el("p", "empty", cards.length ? "No card matches the filters." : "No cards in this review set."));
    }
    keys.forEach(function (key) { main.appendChild(renderCard(byKey.get(key))); });
    if (!keys.length) { focusKey = null; return; }
    if (keys.indexOf(focusKey) < 0) focusKey = keys[0];
    markFocus(false);
  }

  function renderImages(card) {
    var box = el("div", "images" + ((card.images || []).length > 1 ? " several" : ""));
    (card.images || []).forEach(function (image, i) {
      var fig = el("figure", "image");
      var link = safeLink(image.link);
      var holder = link ? el("a") : el("span");
      if (link) {
        holder.href = link;
        holder.target = "_blank";
        holder.rel = "noopener noreferrer";
        holder.title = "Open the full image";
      }
      if (image.thumb) {
        var img = el("img");
        img.loading = "lazy";
        img.alt = "image " + (i + 1) + " of card " + (card.n + 1);
        img.src = image.thumb;
        holder.appendChild(img);
      } else {
        holder.className = "no-picture";
        holder.appendChild(el("span", null, "No picture: " + (image.thumbError || image.error || "unknown reason")));
      }
      fig.appendChild(holder);
      var rights = [image.license, image.rightsHolder ? "© " + image.rightsHolder : null, image.creator]
        .filter(function (x) { return x; });
      if (rights.length) fig.appendChild(el("figcaption", "rights", rights.join(" · ")));
      if (image.error && image.thumb) fig.appendChild(el("figcaption", "error", "classify: " + image.error));
      box.appendChild(fig);
    });
    if (!(card.images || []).length) box.appendChild(el("div", "no-picture", "No image"));
    if (card.imagesTotal > (card.images || []).length) {
      box.appendChild(el("div", "more muted", "+" + (card.imagesTotal - card.images.length) + " more images"));
    }
    return box;
  }

  function metaRow(dl, label, value, cls) {
    if (value === undefined || value === null || value === "") return null;
    dl.appendChild(el("dt", null, label));
    var dd = el("dd", cls || null);
    if (value instanceof Node) dd.appendChild(value); else dd.textContent = String(value);
    dl.appendChild(dd);
    return dd;
  }

  function renderCard(card) {
    var art = el("article", "card kind-" + card.kind);
    art.setAttribute("data-key", card.key);
    art.setAttribute("data-n", String(card.n));
    art.tabIndex = -1;
    art.appendChild(renderImages(card));

    var body = el("div", "body");
    var head = el("div", "name-row");
    head.appendChild(el("span", "name" + (card.name ? "" : " withheld"),
                        card.name || (card.kind === "errors" ? "Not classified" : "Unknown (name withheld)")));
    if (card.rank) head.appendChild(el("span", "rank", card.rank));
    head.appendChild(el("span", "conf", pct(card.confidence)));
    body.appendChild(head);
    var bar = el("div", "confbar");
    var fill = el("span");
    fill.style.width = Math.max(0, Math.min(100, 100 * (card.confidence || 0))) + "%";
    bar.appendChild(fill);
    body.appendChild(bar);

    var topk = el("ol", "topk");
    (card.topk || []).forEach(function (entry, i) {
      var li = el("li");
      var b = el("button", "pick", String(i + 1));
      b.type = "button";
      b.title = "Choose this name (key " + (i + 1) + ")";
      b.addEventListener("click", function () { choose(card, i); });
      li.appendChild(b);
      li.appendChild(el("span", "topk-name", entry[0]));
      li.appendChild(el("span", "topk-conf", pct(entry[1])));
      topk.appendChild(li);
    });
    body.appendChild(topk);

    var dl = el("dl", "meta");
    if (card.publisherName || card.agreement) {
      var pub = el("span");
      if (card.publisherName) pub.appendChild(el("span", "publisher-name", card.publisherName));
      if (card.agreement) pub.appendChild(el("span", "agree agree-" + card.agreement.replace(/\s+/g, "-"), card.agreement));
      metaRow(dl, "Publisher", pub);
    }
    metaRow(dl, "Prior", card.prior);
    var occ = [card.gbifID ? "gbifID " + card.gbifID : null, card.occurrenceID ? card.occurrenceID : null]
      .filter(function (x) { return x; }).join(" · ");
    metaRow(dl, "Occurrence", occ);
    if (card.imagesUsed !== undefined) metaRow(dl, "Images", card.imagesUsed + " classified, " + card.imagesFailed + " failed");
    metaRow(dl, "Error", card.error, "error");
    if (card.remarks) {
      var more = el("details");
      more.appendChild(el("summary", null, "machine's remarks"));
      more.appendChild(el("div", "small", card.remarks));
      metaRow(dl, "Remarks", more, "small");
    }
    body.appendChild(dl);

    var state = el("div", "decision-state");
    body.appendChild(state);

    var actions = el("div", "actions");
    [["accept", "Accept", "a"], ["correct", "Correct…", "c"], ["rejected", "Reject", "r"],
     ["not a plant", "Not a plant", "n"], ["unsure", "Unsure", "u"]].forEach(function (a) {
      var b = el("button", "act act-" + a[0].replace(/\s+/g, "-"));
      b.type = "button";
      b.appendChild(document.createTextNode(a[1] + " "));
      b.appendChild(el("kbd", null, a[2].toUpperCase()));
      b.addEventListener("click", function () { act(card, a[0]); });
      actions.appendChild(b);
    });
    body.appendChild(actions);

    var correct = el("div", "correct");
    correct.hidden = true;
    var input = el("input");
    input.setAttribute("list", "labels");
    input.placeholder = "scientific name (Enter to save, Esc to cancel)";
    input.className = "correct-name";
    input.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); correctTo(card, input.value); }
      else if (e.key === "Escape") { e.preventDefault(); correct.hidden = true; art.focus(); }
      e.stopPropagation();
    });
    var hint = el("span", "hint muted");
    input.addEventListener("input", function () {
      var v = input.value.trim();
      var lower = v.toLowerCase();
      var known = labelSet.has(v) || labels.some(function (n) { return n.toLowerCase().indexOf(lower) === 0; });
      hint.textContent = v && labels.length && !known ? NOT_A_LABEL : "";
    });
    correct.appendChild(input);
    correct.appendChild(hint);
    body.appendChild(correct);

    var remark = el("input", "remark");
    remark.placeholder = "remark (optional, E)";
    remark.maxLength = 2000;
    remark.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === "Escape") { e.preventDefault(); saveRemark(card, remark.value); art.focus(); }
      e.stopPropagation();
    });
    remark.addEventListener("change", function () { saveRemark(card, remark.value); });
    body.appendChild(remark);

    art.appendChild(body);
    art.addEventListener("click", function (e) {
      if (e.target.closest("a, button, input")) return;
      focusKey = card.key;
      markFocus(false);
    });
    paintDecision(art, card);
    return art;
  }

  function paintDecision(art, card) {
    var mine = store.get(card.key), d = decisionOf(card);
    DECISIONS.forEach(function (x) { art.classList.remove("decided-" + x.replace(/\s+/g, "-")); });
    art.classList.toggle("decided-before", !!d && !mine);
    var state = art.querySelector(".decision-state");
    state.textContent = "";
    if (d) {
      art.classList.add("decided-" + d.decision.replace(/\s+/g, "-"));
      state.appendChild(el("b", null, d.decision.charAt(0).toUpperCase() + d.decision.slice(1)));
      if (d.scientificName) {
        state.appendChild(document.createTextNode(" as "));
        state.appendChild(el("i", null, d.scientificName));
      }
      state.appendChild(document.createTextNode(" by " + d.identifiedBy));
      if (!mine) {
        state.appendChild(el("span", "before muted", " on " + d.dateIdentified + " (applied)"));
        if (d.remarks) state.appendChild(el("div", "before muted", d.remarks));
      }
      else if (card.reviewed) state.appendChild(el("span", "before muted", " (replaces " + card.reviewed.decision +
        (card.reviewed.scientificName ? " as " + card.reviewed.scientificName : "") + " by " +
        card.reviewed.identifiedBy + ")"));
    }
    var remark = art.querySelector(".remark");
    if (document.activeElement !== remark) remark.value = mine && mine.remarks ? mine.remarks : (card._remark || "");
    var can = (card.ids || []).length > 0;
    art.querySelectorAll(".actions button, .pick").forEach(function (b) { b.disabled = !can; });
    if (!can) state.textContent = "No classified image: nothing to decide.";
    if (can && !card.name) art.querySelector(".act-accept").disabled = true;
  }

  function cardNode(key) {
    var nodes = document.querySelectorAll("#cards article.card");
    for (var i = 0; i < nodes.length; i++) if (nodes[i].getAttribute("data-key") === key) return nodes[i];
    return null;
  }

  function repaint(key) {
    var node = cardNode(key), card = byKey.get(key);
    if (node && card) paintDecision(node, card);
    updateProgress();
  }

  function markFocus(scroll) {
    document.querySelectorAll("#cards article.focused").forEach(function (n) { n.classList.remove("focused"); });
    var node = focusKey && cardNode(focusKey);
    if (!node) return;
    node.classList.add("focused");
    if (document.activeElement === document.body || (document.activeElement && document.activeElement.closest("#cards"))) {
      node.focus({preventScroll: true});
    }
    if (scroll) node.scrollIntoView({block: "nearest"});
  }

  function updateProgress() {
    var done = earlier, others = 0;  // decided before, plus this browser's decisions on the other cards loaded
    store.decisions.forEach(function (d, key) {
      var c = byKey.get(key);
      if (!c) others += 1;
      else if (!c.reviewed) done += 1;
    });
    var total = site ? site.cards : 0;
    var text = "Reviewed " + done.toLocaleString() + " / " + total.toLocaleString();
    if (pagesLoaded >= (site ? site.pages : 0) && others > 0) {
      text += " (+" + others.toLocaleString() + " kept from an earlier build, exported too)";
    }
    $("progress-text").textContent = text;
    $("progress").max = Math.max(1, total);
    $("progress").value = done;
  }

  // ---------------------------------------------------------------- decisions

  function reviewer() {
    var name = $("reviewer").value.trim();
    if (!name) {
      alertBox("Type your name in the Reviewer field first: every decision records who made it.", "reviewer");
      $("reviewer").focus();
      return null;
    }
    alertBox(null, "reviewer");
    return name;
  }

  function decide(card, decision, name) {
    if (!(card.ids || []).length) return;
    var by = reviewer();
    if (!by) return;
    var before = store.get(card.key);
    var node = cardNode(card.key);
    var remark = node ? node.querySelector(".remark").value.trim() : (before && before.remarks) || "";
    var d = {decision: decision, scientificName: name || "", identifiedBy: by, dateIdentified: isoNow(),
             remarks: remark};
    if (!(card.ids.length === 1 && card.ids[0] === card.key)) d.ids = card.ids.slice();
    undoStack.push({key: card.key, before: before});
    store.set(card.key, d);
    alertBox(null, "accept");
    repaint(card.key);
    if (node) node.querySelector(".correct").hidden = true;
    advance();
  }

  function act(card, what) {
    if (what === "accept") {
      if (!card.name) {
        alertBox("Nothing to accept: the machine gave no name. Pick one of its top names (1–9) or type one (c).", "accept");
        return;
      }
      alertBox(null, "accept");
      decide(card, "accepted", card.name);
    } else if (what === "correct") {
      var node = cardNode(card.key);
      if (!node) return;
      var box = node.querySelector(".correct");
      box.hidden = false;
      var input = box.querySelector("input");
      var d = decisionOf(card);
      input.value = d && d.decision === "corrected" ? d.scientificName : "";
      input.focus();
    } else {
      decide(card, what, "");
    }
  }

  // The label a typed name stands for, as review apply will look it up: the label itself (any case, "x" for a
  // hybrid's "×"), or the label followed by its authorship ("Quercus robur L., 1753"); null for another name.
  function labelOf(name) {
    var v = name.replace(/\s+/g, " ").replace(/ x /g, " \u00d7 "), lower = v.toLowerCase();
    for (var i = 0; i < labels.length; i++) {
      var l = labels[i].toLowerCase();
      if (lower === l) return labels[i];
      if (lower.indexOf(l + " ") === 0 && /^[A-Z(]/.test(v.charAt(l.length + 1))) return name;
    }
    return null;
  }

  function correctTo(card, name) {
    name = name.trim();
    if (!name) return;
    var label = labels.length ? labelOf(name) : name;
    // Saved as the label's spelling when only the case differs (review apply compares names as spelt); any
    // other name is saved as typed, with a warning that outlives the correction field.
    alertBox(label ? null : "Saved \u201c" + name + "\u201d: " + NOT_A_LABEL, "name");
    name = label || name;
    decide(card, name === card.name ? "accepted" : "corrected", name);
  }

  function choose(card, i) {
    var entry = (card.topk || [])[i];
    if (entry && entry[0]) correctTo(card, entry[0]);
  }

  function saveRemark(card, text) {
    text = text.trim();
    var d = store.get(card.key);
    if (!d) { card._remark = text; return; }           // kept with the card until its decision
    if ((d.remarks || "") === text) return;
    undoStack.push({key: card.key, before: d});
    var next = Object.assign({}, d, {remarks: text});
    store.set(card.key, next);
    repaint(card.key);
  }

  function clearDecision(card) {
    var before = store.get(card.key);
    if (!before) return;
    undoStack.push({key: card.key, before: before});
    store.set(card.key, null);
    repaint(card.key);
  }

  function undo() {
    var last = undoStack.pop();
    if (!last) return;
    store.set(last.key, last.before);
    repaint(last.key);
    if (pageKeys().indexOf(last.key) >= 0) { focusKey = last.key; markFocus(true); }
  }

  function advance() {
    var keys = pageKeys(), i = keys.indexOf(focusKey);
    if (i >= 0 && i + 1 < keys.length) { focusKey = keys[i + 1]; markFocus(true); }
    else if (i === keys.length - 1) { goPage(page + 1, true); }
  }

  // ---------------------------------------------------------------- navigation

  function goPage(n, keepGoing) {
    var pages = Math.ceil(view.length / pageSize());
    if (n < 0 || n >= pages) return;
    page = n;
    focusKey = null;
    renderCards();
    renderPager();
    window.scrollTo(0, 0);
    if (keepGoing) markFocus(true);
  }

  function move(delta) {
    var keys = pageKeys(), i = keys.indexOf(focusKey);
    if (i < 0) { focusKey = keys[0] || null; markFocus(true); return; }
    var j = i + delta;
    if (j >= keys.length) { goPage(page + 1, true); return; }
    if (j < 0) {
      if (page > 0) { goPage(page - 1, true); var k = pageKeys(); focusKey = k[k.length - 1]; markFocus(true); }
      return;
    }
    focusKey = keys[j];
    markFocus(true);
  }

  function focusedCard() { return focusKey ? byKey.get(focusKey) : null; }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) {
      if (e.key === "Escape") { t.blur(); markFocus(false); }
      return;
    }
    var card = focusedCard(), k = e.key;
    var handled = true;
    if (k === "?") toggleHelp();
    else if (k === "Escape") toggleHelp(false);
    else if (k === "j" || k === "ArrowRight") move(1);
    else if (k === "k" || k === "ArrowLeft") move(-1);
    else if (k === "]" || k === "PageDown") goPage(page + 1, true);
    else if (k === "[" || k === "PageUp") goPage(page - 1, true);
    else if (k === "z") undo();
    else if (!card) handled = false;
    else if (k === "a") act(card, "accept");
    else if (k === "c") act(card, "correct");
    else if (k === "r") act(card, "rejected");
    else if (k === "n") act(card, "not a plant");
    else if (k === "u") act(card, "unsure");
    else if (k === "x" || k === "Delete") clearDecision(card);
    else if (k === "e") { var node = cardNode(card.key); if (node) node.querySelector(".remark").focus(); }
    else if (k === "o") openImage(card);
    else if (/^[1-9]$/.test(k)) choose(card, parseInt(k, 10) - 1);
    else handled = false;
    if (handled) e.preventDefault();
  }

  function openImage(card) {
    var first = (card.images || []).map(function (i) { return safeLink(i.link); }).filter(function (x) { return x; })[0];
    if (first) window.open(first, "_blank", "noopener,noreferrer");
  }

  function toggleHelp(show) {
    var help = $("help");
    help.hidden = show === undefined ? !help.hidden : !show;
    $("help-toggle").setAttribute("aria-expanded", String(!help.hidden));
  }

  // ---------------------------------------------------------------- export and import

  function decisionsCsv() {
    var rows = [];
    store.decisions.forEach(function (d, key) {
      var card = byKey.get(key);
      var ids = d.ids || (card ? card.ids : [key]);
      ids.forEach(function (id) {
        rows.push({order: card ? card.n : Infinity, key: key, id: id, fields: [
          id, d.decision, d.decision === "accepted" || d.decision === "corrected" ? d.scientificName : "",
          d.identifiedBy, d.dateIdentified, d.remarks || ""]});
      });
    });
    rows.sort(function (a, b) { return (a.order - b.order) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) ||
                                         (a.id < b.id ? -1 : a.id > b.id ? 1 : 0); });
    return {text: D.toCsv(rows.map(function (r) { return r.fields; })), rows: rows.length};
  }

  function exportDecisions() {
    var csv = decisionsCsv();
    var blob = new Blob([csv.text], {type: "text/csv;charset=utf-8"});
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    var stamp = isoNow().replace(/[:]/g, "").replace(/Z$/, "");
    a.download = "decisions-" + stamp + ".csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
    status("Exported " + csv.rows + " decision row(s).");
  }

  function importDecisions(file) {
    if (pagesLoaded < site.pages) {
      alertBox("Wait until every card has loaded, then import again.", "import");
      return;
    }
    var reader = new FileReader();
    reader.onload = function () {
      var rows = D.parseCsv(String(reader.result));
      if (!rows.length || rows[0].join(",") !== HEADER.join(",")) {
        alertBox("Not a decisions file: its first line must be " + HEADER.join(","), "import");
        return;
      }
      var added = 0, unknown = 0;
      rows.slice(1).forEach(function (r) {
        if (r.length === 1 && r[0] === "") return;
        var key = idToKey.get(r[0]);
        if (!key || DECISIONS.indexOf(r[1]) < 0) { unknown += 1; return; }
        var card = byKey.get(key);
        var d = {decision: r[1], scientificName: r[2] || "", identifiedBy: r[3], dateIdentified: r[4], remarks: r[5] || ""};
        if (!(card.ids.length === 1 && card.ids[0] === key)) d.ids = card.ids.slice();
        store.set(key, d);
        added += 1;
      });
      alertBox(unknown ? unknown + " row(s) name predictions not in this review site and were skipped." : null, "import");
      status("Imported " + added + " decision row(s).");
      renderCards();
      refreshView(false);
      updateProgress();
    };
    reader.readAsText(file, "utf-8");
  }

  // ---------------------------------------------------------------- start

  function wire() {
    $("reviewer").value = store.setting("reviewer") || "";
    $("reviewer").addEventListener("change", function () {
      store.setting("reviewer", $("reviewer").value.trim());
      if ($("reviewer").value.trim()) alertBox(null, "reviewer");
    });
    $("reviewer").addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); store.setting("reviewer", $("reviewer").value.trim()); e.target.blur(); markFocus(false); }
    });
    ["f-reviewed", "f-kind", "f-agreement", "f-sort", "f-page-size"].forEach(function (id) {
      $(id).addEventListener("change", function () { refreshView(true); });
    });
    ["f-species", "f-conf-min", "f-conf-max"].forEach(function (id) {
      $(id).addEventListener("input", function () { refreshView(true); });
    });
    $("f-reset").addEventListener("click", function () {
      ["f-reviewed", "f-kind", "f-agreement"].forEach(function (id) { $(id).value = "all"; });
      $("f-sort").value = "review";
      ["f-species", "f-conf-min", "f-conf-max"].forEach(function (id) { $(id).value = ""; });
      refreshView(true);
    });
    document.querySelectorAll(".pager .prev").forEach(function (b) { b.addEventListener("click", function () { goPage(page - 1); }); });
    document.querySelectorAll(".pager .next").forEach(function (b) { b.addEventListener("click", function () { goPage(page + 1); }); });
    $("export").addEventListener("click", exportDecisions);
    $("import").addEventListener("change", function (e) { if (e.target.files[0]) importDecisions(e.target.files[0]); e.target.value = ""; });
    $("help-toggle").addEventListener("click", function () { toggleHelp(); });
    $("help-close").addEventListener("click", function () { toggleHelp(false); });
    document.addEventListener("keydown", onKey);
    window.addEventListener("storage", function (e) { var key = store.onStorage(e); if (key) repaint(key); });
    window.addEventListener("beforeunload", function (e) {
      if (store.unsaved.size || !store.ok && store.decisions.size) { e.preventDefault(); e.returnValue = ""; }
    });
  }

  function describeBuild() {
    var parts = [site.cards.toLocaleString() + " cards", "from " + site.predictions];
    if (site.selection && site.selection !== "all") parts.push("selected: " + site.selection);
    if (site.samplePerSpecies) parts.push(site.samplePerSpecies + " per name");
    if (site.limit) parts.push("first " + site.limit);
    parts.push("built " + site.built);
    return parts.join(" · ");
  }

  function fillSpecies() {
    var list = $("species-list");
    (site.species || []).forEach(function (entry) {
      var o = document.createElement("option");
      o.value = entry[0];
      o.label = entry[0] + " (" + entry[1] + ")";
      list.appendChild(o);
    });
  }

  window.PlantrayReview = {
    site: function (info) {
      site = info;
      store = new D.Store(site.siteKey, alertBox);
      server = new D.Server(function () { return decisionsCsv().text; },
                            function (text) { $("server-state").textContent = text; }, alertBox);
      store.onChange = function () { server.schedule(); };
      document.title = site.title;
      $("title").textContent = site.title;
      $("build-info").textContent = describeBuild();
      fillSpecies();
      wire();
      server.detect();
      updateProgress();
      if (site.pages === 0) { render(true); return; }
      status("Loading cards…");
      loadNextPage();
    },
    page: onPage,
    labels: function (names) {
      labels = names;
      labelSet = new Set(names);
      var list = $("labels"), frag = document.createDocumentFragment();
      names.forEach(function (n) { var o = document.createElement("option"); o.value = n; frag.appendChild(o); });
      list.appendChild(frag);
    },
    // for tests and the curious: the decisions file as the Export button writes it
    decisionsCsv: function () { return decisionsCsv().text; },
  };

  document.addEventListener("DOMContentLoaded", function () {
    if (!site) {
      alertBox("This review site is incomplete: data/site.js is missing (the build did not finish). " +
               "Run plantray review build again.", "incomplete");
    }
  });
})();
