// The terminal's page: its screen follows the watch stream (/events, one
// event a line, concertctl(8) WATCH); its keys POST simulator commands
// with the token the page was served with; the lists are concertd's own
// answers, read again when a transaction ends.
'use strict';

const OUTCOMES = ['approve', 'refuse', 'forbidden', 'abandon', 'not-ended', 'timeout',
  'phone', 'unknown'];
const $ = (id) => document.getElementById(id);
const token = document.querySelector('meta[name="concert-token"]').content;

// The transaction on the screen: its id, whether it waits for a decision.
let running = null;

function frenchAmount(a) {
  return a ? a.replace('.', ',') : '';
}

function screen(top, big, bottom, kind, outcome) {
  $('screen-top').textContent = top;
  $('screen-amount').textContent = big;
  $('screen-bottom').textContent = bottom || '\u00a0';
  $('screen').className = 'screen' + (kind ? ' ' + kind : '');
  $('screen').dataset.outcome = outcome || '';
  keys();
}

function keys() {
  $('key-red').disabled = running === null;
  $('key-green').disabled = !(running && running.waiting);
  $('decide').disabled = !(running && running.waiting);
}

function idle() {
  running = null;
  screen('CONCERT', 'BONJOUR', '', '', '');
}

function said(text, refused) {
  $('said').textContent = (refused ? 'refused: ' : '') + text.trim();
}

async function read(path, into, missing) {
  try {
    const r = await fetch(path, { cache: 'no-store' });
    const t = await r.text();
    if (!r.ok && missing && /unknown command/.test(t)) {
      $(into).textContent = missing;
    } else {
      $(into).textContent = t;
    }
    return r.ok ? t : null;
  } catch (e) {
    $(into).textContent = 'cannot read: ' + e;
    return null;
  }
}

async function status() {
  const t = await fetch('/text/status', { cache: 'no-store' }).then((r) => r.text(), () => '');
  const hold = /^hold: (\w+)/m.exec(t);
  $('hold-state').textContent = hold ? hold[1] : 'not the simulator';
  const next = /^next: (.*)$/m.exec(t);
  $('next-state').textContent = next ? next[1] : '';
}

function lists() {
  read('/text/show', 'show');
  read('/text/totals', 'totals');
  read('/text/registers', 'registers', 'not available (this concertd has no registers command)');
}

async function send(command) {
  try {
    const r = await fetch('/command', {
      method: 'POST',
      headers: { 'X-Concert-Token': token, 'Content-Type': 'text/plain' },
      body: command,
    });
    said(await r.text(), !r.ok);
  } catch (e) {
    said('cannot reach the page\'s server: ' + e, true);
  }
  status();
}

function event(line) {
  const log = $('events');
  log.textContent = (line + '\n' + log.textContent).split('\n').slice(0, 50).join('\n');
  let m;
  if ((m = /^begun tx (\d+) (\S+)(?: ([0-9.,]+ \S+))? register (\d+) (\S+) (.*)$/.exec(line))) {
    running = { id: m[1], waiting: false };
    $('screen-tx').textContent = 'tx ' + m[1] + ' ' + m[2] + ' register ' + m[4] + ' (' +
      m[5] + ' ' + m[6] + ')';
    screen(m[2].toUpperCase(), m[3] ? 'MONTANT ' + frenchAmount(m[3]) : m[2].toUpperCase(),
      'PRESENTEZ CARTE', '', '');
    read('/text/show', 'show');
    // A register seen for the first time shows at once.
    read('/text/registers', 'registers', 'not available');
  } else if ((m = /^waiting tx (\d+)/.exec(line))) {
    if (running && running.id === m[1]) {
      running.waiting = true;
      $('screen-bottom').textContent = 'PRESENTEZ CARTE';
      $('screen').className = 'screen waiting';
      $('screen-tx').textContent += ': waits for a decision';
      keys();
    }
  } else if ((m = /^ended tx (\d+) (\S+)\s*(.*)$/.exec(line))) {
    running = null;
    const af = /AF(\d\d)/.exec(m[3]);
    const code = af ? 'AF' + af[1] : m[2];
    if (m[2] === 'approved') {
      screen('', 'PAIEMENT ACCEPTE', m[3], 'approved', 'approved');
    } else if (code === 'AF06') {
      screen('', 'TRANSACTION ANNULEE', m[3], 'declined', code);
    } else if (m[2] === 'unknown') {
      screen('', 'RESULTAT INCONNU', m[3], 'declined', code);
    } else {
      screen('', 'PAIEMENT REFUSE', m[3], 'declined', code);
    }
    $('screen-tx').textContent = 'tx ' + m[1] + ' ' + m[2] + ' ' + m[3];
    lists();
    status();
  } else if (/^(delivered|undelivered) /.test(line)) {
    read('/text/show', 'show');
  } else if (/^finding /.test(line)) {
    read('/text/registers', 'registers', 'not available');
  } else if (/^reload /.test(line)) {
    status();
  } else if (/^lost /.test(line)) {
    lists();
    status();
  }
}

function watch() {
  const es = new EventSource('/events');
  es.onopen = () => {
    idle();
    lists();
    status();
  };
  es.onmessage = (e) => event(e.data);
  es.onerror = () => {
    said('the event stream from concertd is interrupted; retrying', true);
    // Refused (every watcher taken, concertd stopped): the browser gives
    // up on it; try again a little later.
    if (es.readyState === EventSource.CLOSED) {
      setTimeout(watch, 3000);
    }
  };
}

function fill(select, names) {
  for (const n of names) {
    const o = document.createElement('option');
    o.value = n;
    o.textContent = n;
    select.appendChild(o);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  fill($('decide-outcome'), OUTCOMES.filter((o) => o !== 'approve'));
  fill($('next-outcome'), OUTCOMES.concat(['busy']));
  $('key-red').addEventListener('click', () => send('press red'));
  $('key-green').addEventListener('click', () => send('decide approve'));
  $('decide').addEventListener('click', () => send('decide ' + $('decide-outcome').value));
  $('hold-on').addEventListener('click', () => send('hold on'));
  $('hold-off').addEventListener('click', () => send('hold off'));
  $('next-arm').addEventListener('click', () => {
    const quirks = $('next-quirks').value.trim();
    send('next ' + $('next-outcome').value + (quirks ? ' ' + quirks : ''));
  });
  $('next-clear').addEventListener('click', () => send('next clear'));
  idle();
  watch();
});
