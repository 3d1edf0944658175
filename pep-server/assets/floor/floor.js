// pep factory-floor page: follows /v3/events and updates the server-rendered page in place.
// Without this script the page is a snapshot that refreshes itself every 30 s.
(function () {
  'use strict';
  var MAX_ROWS = 50;
  var CHART_MINUTES = 60;
  var LABELS = {
    deployed: '\u2714 Deployed', failed: '\u2716 Failed', interrupted: '\u2716 Interrupted',
    in_doubt: '\u26a0 In doubt', resolved: '\u2714 Resolved',
    in_progress: '\u27f3 In progress', attempt: '\u2192 Attempt', conflict: '\u26a0 Conflict',
    refused: '\u26d4 Refused address', revoked: '\u26d4 Revoked',
    other: '\u2022 Other'
  };
  var body = document.body;
  var offsetMinutes = Number(body.getAttribute('data-offset-minutes')) || 0;
  var tbody = document.querySelector('#attempts tbody');
  var source = null;
  // Rows that arrived before the counters that count them. The server sends an `attempt` at once
  // and the `counters` (which include it: the store is written before the event) within a second;
  // a row and its counters are shown in the same update, so the screen never shows a new row next
  // to counters that do not include it yet.
  var pending = [];
  var pendingTimer = null;
  // If no counters come (the store does not answer), the rows are shown anyway after this long.
  var PENDING_MAX_MS = 5000;

  function $(id) { return document.getElementById(id); }
  function setText(id, value) { var e = $(id); if (e) { e.textContent = String(value); } }
  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function clock(ms) {
    var d = new Date(ms + offsetMinutes * 60000);
    return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
  }
  function durationText(ms) {
    if (ms === null || ms === undefined) { return ''; }
    if (ms < 1000) { return ms + ' ms'; }
    if (ms < 60000) { return (ms / 1000).toFixed(1) + ' s'; }
    return Math.floor(ms / 60000) + ' min ' + pad(Math.floor(ms / 1000) % 60) + ' s';
  }
  function statusText(status, name) {
    if (status === null || status === undefined) { return '\u2014'; }
    return name ? status + ' ' + name.replace(/^FCC_STATUS_/, '') : String(status);
  }
  function cell(tr, cls, text, title) {
    var td = document.createElement('td');
    if (cls) { td.className = cls; }
    td.textContent = text;
    if (title) { td.title = title; }
    tr.appendChild(td);
    return td;
  }
  function badge(td, result) {
    var span = document.createElement('span');
    span.className = 'badge ' + result;
    span.textContent = LABELS[result] || LABELS.other;
    td.appendChild(span);
  }

  function setLive(state, text) {
    var e = $('live');
    if (e) { e.className = 'live ' + state; }
    setText('live-text', text);
  }

  function renderCounters(live) {
    var c = live.counters;
    setText('c-deployed-today', c.deployedToday);
    setText('c-deployed-total', c.deployedTotal);
    setText('c-failed-today', c.failedToday);
    setText('c-in-flight', c.inFlight);
    setText('c-in-doubt', c.inDoubt);
    setText('c-rate1', c.rate1.toFixed(1));
    setText('c-rate5', c.rate5.toFixed(1));
    setText('c-rate15', c.rate15.toFixed(1));
    renderChart(live);
  }

  function renderChart(live) {
    var svg = $('chart');
    if (!svg) { return; }
    var ns = 'http://www.w3.org/2000/svg';
    var peak = 1, deployed = 0, failed = 0;
    live.minutes.forEach(function (m) {
      peak = Math.max(peak, m.deployed + m.failed);
      deployed += m.deployed; failed += m.failed;
    });
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    live.minutes.forEach(function (m, i) {
      var g = document.createElementNS(ns, 'g');
      var title = document.createElementNS(ns, 'title');
      title.textContent = clock(live.chartStart + i * 60000).slice(0, 5) + ' \u2014 ' +
        m.deployed + ' deployed, ' + m.failed + ' failed';
      g.appendChild(title);
      var okH = Math.floor(m.deployed * 100 / peak), badH = Math.floor(m.failed * 100 / peak);
      [['ok', okH, 100 - okH], ['bad', badH, 100 - okH - badH]].forEach(function (b) {
        if (b[1] > 0) {
          var r = document.createElementNS(ns, 'rect');
          r.setAttribute('class', b[0]);
          r.setAttribute('x', String(i * 10 + 1));
          r.setAttribute('y', String(b[2]));
          r.setAttribute('width', '8');
          r.setAttribute('height', String(b[1]));
          g.appendChild(r);
        }
      });
      svg.appendChild(g);
    });
    setText('chart-text', 'Last hour: ' + deployed + ' deployed, ' + failed + ' failed; peak ' + peak + '/min');
  }

  function attemptRow(a) {
    var tr = document.createElement('tr');
    tr.className = 'r-' + a.result;
    tr.setAttribute('data-serial', a.serial);
    tr.setAttribute('data-result', a.result);
    cell(tr, 't', clock(a.at));
    // Long serials and IPv6 gateways are cut with an ellipsis; the full value is the tooltip.
    cell(tr, 'serial', a.serial, a.serial);
    cell(tr, 'gw', a.gateway, a.gateway);
    badge(cell(tr, '', ''), a.result);
    var fcc = cell(tr, 'fcc', '', a.detail);
    var st = document.createElement('span');
    st.className = 'st';
    st.textContent = statusText(a.fccStatus, a.fccStatusName);
    var msg = document.createElement('span');
    msg.className = 'msg';
    msg.textContent = a.message;
    fcc.appendChild(st);
    fcc.appendChild(msg);
    cell(tr, 'dur', durationText(a.durationMs));
    return tr;
  }

  function renderAttempts(list) {
    if (!tbody) { return; }
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    list.forEach(function (a) { tbody.appendChild(attemptRow(a)); });
    var none = $('no-attempts');
    if (none) { none.hidden = list.length > 0; }
  }

  function addAttempt(a) {
    if (!tbody) { return; }
    // An attempt's end replaces its in-progress row.
    Array.prototype.slice.call(tbody.querySelectorAll('tr.r-in_progress')).forEach(function (tr) {
      if (tr.getAttribute('data-serial') === a.serial) { tbody.removeChild(tr); }
    });
    var tr = attemptRow(a);
    tr.classList.add('fresh');
    tbody.insertBefore(tr, tbody.firstChild);
    while (tbody.rows.length > MAX_ROWS) { tbody.removeChild(tbody.lastChild); }
    var none = $('no-attempts');
    if (none) { none.hidden = true; }
  }

  function queueAttempt(a) {
    pending.push(a);
    if (pendingTimer === null) { pendingTimer = setTimeout(showPending, PENDING_MAX_MS); }
  }

  function dropPending() {
    if (pendingTimer !== null) { clearTimeout(pendingTimer); pendingTimer = null; }
    pending = [];
  }

  function showPending() {
    var rows = pending;
    dropPending();
    rows.forEach(addAttempt);
  }

  // The server-rendered rows get the same tooltips as the rows built here.
  function addTitles() {
    Array.prototype.slice.call(document.querySelectorAll('#attempts td.serial, #attempts td.gw'))
      .forEach(function (td) { if (!td.title) { td.title = td.textContent; } });
  }

  function connect() {
    if (!window.EventSource) { return; }
    source = new EventSource('/v3/events');
    source.addEventListener('snapshot', function (e) {
      var s = JSON.parse(e.data);
      offsetMinutes = s.offsetMinutes;
      // The snapshot is the store's truth and already holds any queued row.
      dropPending();
      renderCounters(s);
      renderAttempts(s.attempts);
      setLive('on', 'Live \u00b7 updated ' + clock(s.now));
    });
    source.addEventListener('counters', function (e) {
      var live = JSON.parse(e.data);
      // One synchronous update: the browser paints the counters and their rows together.
      renderCounters(live);
      showPending();
      setLive('on', 'Live \u00b7 updated ' + clock(live.now));
    });
    source.addEventListener('attempt', function (e) {
      queueAttempt(JSON.parse(e.data));
    });
    source.onerror = function () {
      setLive('off', 'Connection lost \u00b7 reconnecting\u2026');
      if (source.readyState === 2) {
        // Closed for good (e.g. 401 after a server restart ended the session): check, then retry.
        source = null;
        setTimeout(function () {
          fetch('/floor/', { credentials: 'same-origin', cache: 'no-store' }).then(function (r) {
            if (r.status === 401) { window.location.reload(); } else { connect(); }
          }, function () { connect(); });
        }, 5000);
      }
    };
  }

  function renderHistory(container, data) {
    while (container.firstChild) { container.removeChild(container.firstChild); }
    if (!data.entries.length) {
      var p = document.createElement('p');
      p.className = 'empty';
      p.textContent = 'No attempt recorded for "' + data.serialPrefix + '".';
      container.appendChild(p);
      return;
    }
    var table = document.createElement('table');
    table.className = 'history';
    var head = table.createTHead().insertRow();
    ['Time', 'Event'].forEach(function (h) {
      var th = document.createElement('th');
      th.scope = 'col';
      th.textContent = h;
      head.appendChild(th);
    });
    var tb = table.createTBody();
    data.entries.forEach(function (r) {
      var kind = { attempt: 'attempt', deployed: 'deployed', failed: 'failed',
        interrupted: 'interrupted', conflict: 'conflict', refused: 'refused',
        revoked: 'revoked' }[r.event] || 'other';
      var tr = document.createElement('tr');
      tr.className = 'r-' + kind;
      tr.setAttribute('data-serial', r.serial);
      cell(tr, 't', clock(r.at));
      var what = cell(tr, '', '');
      badge(what, kind);
      what.appendChild(document.createTextNode(' '));
      [['serial', r.serial], ['st', r.fccStatus === null ? '' : statusText(r.fccStatus, r.fccStatusName)], ['msg', r.message || '']]
        .forEach(function (part) {
          var span = document.createElement('span');
          span.className = part[0];
          span.textContent = part[1];
          if (part[0] === 'serial') { span.title = r.serial; }
          if (part[0] === 'msg' && r.detail) { span.title = r.detail; }
          what.appendChild(span);
        });
      tb.appendChild(tr);
    });
    container.appendChild(table);
    if (data.truncated) {
      var more = document.createElement('p');
      more.className = 'hint';
      more.textContent = 'Only the newest ' + data.limit + ' rows are shown; type more of the serial.';
      container.appendChild(more);
    }
  }

  // The searched gateway's identities (GET /v3/identities/{serial}): the current one, then the
  // earlier ones; nothing when the text is not an exact serial.
  function renderIdentities(out, wanted) {
    var box = $('identity');
    if (!box) {
      box = document.createElement('div');
      box.id = 'identity';
      out.parentNode.insertBefore(box, out);
    }
    while (box.firstChild) { box.removeChild(box.firstChild); }
    fetch('/v3/identities/' + encodeURIComponent(wanted), {
      credentials: 'same-origin', cache: 'no-store'
    }).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (data) {
      if (!data) { return; }
      var table = document.createElement('table');
      table.className = 'history identities';
      table.setAttribute('data-serial', data.serialNumber);
      table.createCaption().textContent = 'Identities of ' + data.serialNumber;
      var tb = table.createTBody();
      var line = function (id, which) {
        var revocation = id.revocation;
        var tr = tb.insertRow();
        tr.className = 'r-' + id.state;
        cell(tr, 't', which);
        var what = cell(tr, '', '');
        badge(what, id.state);
        what.appendChild(document.createTextNode(' '));
        [['serial', id.enrollmentID || '-'],
         ['st', 'certificate ' + (id.certificateSerial || '-') + ', provisioned ' + clock(id.createdAt)],
         ['msg', revocation ? 'revoked ' + clock(revocation.revokedAt) + ' (' + revocation.reason +
           ' by ' + revocation.revokedBy + (revocation.note ? ': ' + revocation.note : '') + ')' : '']]
          .forEach(function (part) {
            var span = document.createElement('span');
            span.className = part[0];
            span.textContent = part[1];
            what.appendChild(span);
          });
      };
      line(data.current, 'current');
      data.history.slice().reverse().forEach(function (p) { line(p, 'earlier'); });
      box.appendChild(table);
    }, function () {});
  }

  function setUpSearch() {
    var form = $('search'), input = $('serial'), out = $('history');
    if (!form || !input || !out || !window.fetch) { return; }
    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var wanted = input.value.trim();
      if (!wanted) { return; }
      fetch('/v3/audit?serialPrefix=' + encodeURIComponent(wanted), {
        credentials: 'same-origin', cache: 'no-store'
      }).then(function (r) {
        return r.json().then(function (data) { return { ok: r.ok, data: data }; });
      }).then(function (res) {
        if (res.ok) {
          renderHistory(out, res.data);
          renderIdentities(out, wanted);
        } else {
          while (out.firstChild) { out.removeChild(out.firstChild); }
          var p = document.createElement('p');
          p.className = 'problem';
          p.textContent = res.data.error || 'The search failed.';
          out.appendChild(p);
        }
        history.replaceState(null, '', '/floor/?serial=' + encodeURIComponent(wanted));
      }, function () {
        out.textContent = 'The server does not answer.';
      });
    });
  }

  addTitles();
  setUpSearch();
  setLive('off', 'Connecting\u2026');
  connect();
}());
