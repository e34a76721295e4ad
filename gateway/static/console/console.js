// The site console's dashboard: reads the console API same-origin (the HttpOnly cookie carries
// the key) and draws with Chart.js. Every value from the API is written as text, never as HTML:
// drop records hold what clients sent (pages, referrer hosts).
(() => {
  'use strict'
  const main = document.querySelector('main[data-site]')
  if (!main) return
  const site = main.dataset.site
  const manage = main.dataset.scope === 'manage'
  const $ = (id) => document.getElementById(id)
  const COLOURS = ['#d1495b', '#edae49', '#00798c', '#30638e', '#8d6a9f', '#6c757d', '#e76f51', '#2a9d8f',
    '#b5838d', '#577590', '#f3722c', '#43aa8b', '#90be6d', '#f94144', '#277da1']
  const colour = {}
  const colourOf = (reason) => (colour[reason] = colour[reason] || COLOURS[Object.keys(colour).length % COLOURS.length])
  let range = 86400
  let interval = 'hour'
  let version = null
  let nextDrops = null
  let chart = null
  let wouldChart = null

  async function api (path, options = {}) {
    const r = await fetch(`/api/v1/sites/${encodeURIComponent(site)}${path}`, {
      credentials: 'same-origin', headers: { 'content-type': 'application/json' }, ...options
    })
    let body = {}
    try { body = await r.json() } catch (e) { body = {} }
    if (r.status === 401) window.location.assign('/console/')
    return { status: r.status, body }
  }

  function el (tag, text, cls) {
    const node = document.createElement(tag)
    if (text !== undefined && text !== null) node.textContent = String(text)
    if (cls) node.className = cls
    return node
  }

  function label (start) {
    const d = start.slice(0, 16).replace('T', ' ')
    return interval === 'day' ? d.slice(0, 10) : interval === 'hour' ? d.slice(5, 16) : d.slice(11, 16)
  }

  function stacked (canvas, previous, labels, datasets) {
    if (previous) previous.destroy()
    return new window.Chart(canvas, {
      type: 'bar',
      data: { labels, datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
        plugins: { legend: { position: 'bottom' } }
      }
    })
  }

  async function loadSummary () {
    const now = Math.floor(Date.now() / 1000)
    const { status, body } = await api(`/summary?from=${now - range}&to=${now + 1}&interval=${interval}`)
    if (status !== 200) return
    const labels = body.buckets.map((b) => label(b.start))
    const reasons = Object.keys(body.totals.dropped).sort()
    const datasets = [{ label: 'accepted', data: body.buckets.map((b) => b.accepted), backgroundColor: '#4caf7a', stack: 'events' }]
    for (const r of reasons) {
      datasets.push({ label: `dropped: ${r}`, data: body.buckets.map((b) => b.dropped[r] || 0), backgroundColor: colourOf(r), stack: 'events' })
    }
    chart = stacked($('chart'), chart, labels, datasets)
    const totals = $('totals')
    totals.replaceChildren(el('span', `${body.totals.accepted} accepted`, 'accepted'))
    const dropped = reasons.reduce((n, r) => n + body.totals.dropped[r], 0)
    totals.append(el('span', `${dropped} dropped`, 'dropped'))
    for (const r of reasons) totals.append(el('span', `${r}: ${body.totals.dropped[r]}`, 'reason'))
    const would = Object.keys(body.totals.would_drop).sort()
    wouldChart = stacked($('would-chart'), wouldChart, labels, would.map((r) => ({
      label: `would drop: ${r}`, data: body.buckets.map((b) => b.would_drop[r] || 0), backgroundColor: colourOf(r), stack: 'would'
    })))
    $('would-none').textContent = would.length ? '' : 'No report-only shield or rule objected in this window.'
    main.dataset.summary = JSON.stringify(body.totals)
  }

  async function loadTop () {
    const now = Math.floor(Date.now() / 1000)
    const { status, body } = await api(`/top?from=${now - range}&to=${now + 1}&limit=8`)
    if (status !== 200) return
    for (const [field, id] of [['pages', 'top-pages'], ['referrers', 'top-referrers'], ['countries', 'top-countries'], ['evidence', 'top-evidence']]) {
      const list = $(id)
      list.replaceChildren()
      for (const item of body[field]) {
        const li = el('li')
        li.append(el('span', item.value || '(none)', 'value'), el('span', item.records, 'n'))
        list.append(li)
      }
      if (!body[field].length) list.append(el('li', 'nothing yet', 'hint'))
    }
  }

  async function loadDrops (append) {
    const params = new URLSearchParams({ limit: '25' })
    const reason = $('f-reason').value
    const evidence = $('f-evidence').value.trim()
    if (reason) params.set('reason', reason)
    if (evidence) params.set('evidence', evidence)
    if (append && nextDrops) params.set('before', nextDrops)
    const { status, body } = await api(`/drops?${params}`)
    const tbody = $('drops').tBodies[0]
    if (!append) tbody.replaceChildren()
    if (status !== 200) {
      tbody.append(el('tr')).append(el('td', (body.errors && Object.values(body.errors).flat().join('; ')) || body.error || 'error'))
      return
    }
    for (const d of body.drops) {
      const tr = el('tr')
      for (const v of [d.timestamp.slice(0, 19).replace('T', ' '), d.reason, d.evidence, d.hostname + d.pathname,
        d.referrer_host, d.country, d.browser, d.detail]) tr.append(el('td', v))
      tbody.append(tr)
    }
    nextDrops = body.next
    $('more').hidden = !nextDrops
    main.dataset.drops = String(tbody.rows.length)
  }

  function showErrors (errors) {
    const list = $('rule-errors')
    list.replaceChildren()
    for (const [field, messages] of Object.entries(errors || {})) {
      for (const m of messages) list.append(el('li', `${field}: ${m}`))
    }
  }

  function proposed () {
    try {
      return JSON.parse($('rules').value || '{}')
    } catch (e) {
      showErrors({ rules: [`not valid JSON: ${e.message}`] })
      return null
    }
  }

  async function loadRules () {
    const { status, body } = await api('/shields')
    if (status !== 200) return
    version = body.version
    $('rules').value = JSON.stringify(body.shields, null, 2)
    const h = await api('/shields/history')
    const list = $('history')
    list.replaceChildren()
    for (const v of h.body.versions || []) {
      const li = el('li', `${v.saved_at.replace('T', ' ')} by ${v.saved_by} `)
      const load = el('button', 'Load', 'small')
      load.type = 'button'
      load.addEventListener('click', () => { $('rules').value = JSON.stringify(v.shields, null, 2) })
      li.append(load)
      list.append(li)
    }
  }

  function tally (title, t) {
    const box = el('div', null, 'tally')
    box.append(el('h3', `${title}: ${t.total}`))
    const reasons = Object.entries(t.by_reason)
    if (reasons.length) box.append(el('p', reasons.map(([r, n]) => `${r} ${n}`).join(' · '), 'hint'))
    for (const s of t.samples) {
      box.append(el('p', `${s.hostname || ''}${s.pathname || ''}${s.country ? ' (' + s.country + ')' : ''}${s.events ? ' × ' + s.events : ''}`, 'sample'))
    }
    return box
  }

  async function dryRun () {
    showErrors({})
    const shields = proposed()
    if (shields === null) return
    const { status, body } = await api('/shields/dry-run', { method: 'POST', body: JSON.stringify({ shields, days: Number($('days').value) }) })
    const out = $('dry-result')
    out.replaceChildren()
    if (status !== 200) { showErrors(body.errors || { request: [body.error || `error ${status}`] }); return }
    out.append(el('p', `Replayed ${body.events_examined} stored events and ${body.drop_records_examined} drop records since ${body.from.slice(0, 16).replace('T', ' ')} UTC.`, 'hint'))
    out.append(tally('Would drop', body.would_drop), tally('Would let back in', body.would_let_back_in))
    if (body.rules.length) {
      const table = el('table', null, 'rules')
      for (const r of body.rules) {
        const tr = el('tr')
        const effect = !r.replayable ? 'cannot be replayed' : r.would_drop !== undefined ? `would drop ${r.would_drop}` : `would let back in ${r.would_let_back_in}`
        tr.append(el('td', r.change), el('td', r.list), el('td', r.rule), el('td', effect))
        table.append(tr)
      }
      out.append(table)
    }
    for (const n of body.notes) out.append(el('p', n, 'note'))
    main.dataset.dryRun = JSON.stringify({ would_drop: body.would_drop.total, let_back_in: body.would_let_back_in.total })
  }

  async function save () {
    showErrors({})
    $('saved').textContent = ''
    const shields = proposed()
    if (shields === null) return
    const { status, body } = await api('/shields', { method: 'PUT', body: JSON.stringify({ shields, version }) })
    if (status === 200) {
      version = body.version
      $('saved').textContent = 'Saved: every worker applies it within a second.'
      await loadRules()
    } else if (status === 409) {
      showErrors({ version: [body.error + ': reload the rules and apply your change again'] })
    } else {
      showErrors(body.errors || { request: [body.error || `error ${status}`] })
    }
  }

  async function refresh () {
    await Promise.all([loadSummary(), loadTop(), loadDrops(false)])
    main.dataset.loaded = String(Date.now())
  }

  for (const b of document.querySelectorAll('nav.ranges button')) {
    b.addEventListener('click', () => {
      for (const o of document.querySelectorAll('nav.ranges button')) o.classList.toggle('active', o === b)
      range = Number(b.dataset.range)
      interval = b.dataset.interval
      refresh()
    })
  }
  $('f-apply').addEventListener('click', () => loadDrops(false))
  $('more').addEventListener('click', () => loadDrops(true))
  if (manage) {
    $('dry-run').addEventListener('click', dryRun)
    $('save').addEventListener('click', save)
    loadRules()
  }
  refresh()
})()
