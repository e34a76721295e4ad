/*
 * The tracker websites embed. It sends Plausible-compatible events to the gateway's
 * POST /api/event and depends on nothing at page load.
 *
 * Configuration comes from data-* attributes on the script tag and from plausible.init({...});
 * an init option wins over its attribute. See docs/tracker.md for the full reference.
 *
 * Written for the minifier: plain functions and short-lived closures, no classes, one IIFE.
 * Every byte counts against the gzip budget checked by build.mjs.
 */
;((w, d, nav, loc, history) => {
  'use strict'

  var VERSION = 1
  var IGNORE_KEY = 'plausible_ignore'
  var TOGGLE_FRAGMENT = '#toggle-plausible-ignore'
  var DOWNLOAD_TYPES =
    'pdf,xlsx,docx,txt,rtf,csv,exe,key,pps,ppt,pptx,7z,pkg,rar,gz,zip,avi,mov,mp4,mpeg,wmv,midi,mp3,wav,wma,dmg'
  // Engaged time below this is not worth an event unless the visitor scrolled further.
  var MIN_ENGAGEMENT_MS = 3000

  var stub = w.plausible
  // A second copy of the script (two tags, or a tag plus a bundled copy) must not double-count.
  if (stub && stub.l) return console.warn('plausible: already loaded')

  var script = d.currentScript
  var root = d.documentElement
  var queue = (stub && stub.q) || []
  var opts // init options; undefined until started
  var api, domain, hashMode, allowLocal, dnt, bot, include, exclude

  // Engagement state of the current pageview (see engage()).
  var pv // {u, props} of the last pageview that was sent; null when it was ignored
  var lastKey // path (plus hash in hash mode) of the last automatic pageview, for dedupe
  var engStart = 0 // when the running engaged interval started; 0 while not engaged
  var engTime = 0 // engaged ms banked and not yet sent
  var sentDepth = -1 // scroll depth last sent; -1 so the first engagement always goes out
  var maxPx = 0 // deepest viewport bottom reached, in px
  var height = 0 // document height, kept current by a ResizeObserver
  var listening

  var on = (target, type, fn, capture) => target.addEventListener(type, fn, capture)
  var now = () => Date.now()
  var attr = (name) => script && script.getAttribute('data-' + name)
  var opt = (key, name) => (key in opts ? opts[key] : attr(name))
  var flag = (key, name, v) => (v = opt(key, name)) != null && v !== false && v !== 'false'
  var list = (v) => (v ? (v.map ? v : v.split(',')).map((s) => s.trim()) : [])
  // Path patterns: `*` matches within one segment, `**` across segments; a trailing slash is optional.
  var patterns = (key) =>
    list(opt(key, key)).map(
      (p) =>
        new RegExp(
          '^' +
            p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*\*?/g, (m) => (m[1] ? '.*' : '[^/]*')) +
            '/?$'
        )
    )
  var path = () => loc.pathname + (hashMode ? loc.hash : '')

  function ignored(p) {
    try {
      if (localStorage[IGNORE_KEY] == 'true') return 1
    } catch (e) {}
    p = path()
    return (
      (!allowLocal &&
        (/^(localhost|127(\.\d+){1,3}|\[::1?\])$/.test(loc.hostname) || loc.protocol == 'file:')) ||
      (dnt && (nav.doNotTrack == 1 || w.doNotTrack == 1 || nav.msDoNotTrack == 1)) ||
      (include.length && !include.some((re) => re.test(p))) ||
      exclude.some((re) => re.test(p))
    )
  }

  // fetch+keepalive with text/plain: a "simple" request (no CORS preflight) that survives
  // navigation. sendBeacon only where fetch cannot keep a request alive.
  function post(body, cb) {
    if (w.Request && 'keepalive' in Request.prototype) {
      fetch(api, {
        method: 'POST',
        keepalive: body.length < 6e4, // browsers refuse keepalive bodies over 64 KB
        headers: { 'Content-Type': 'text/plain' },
        body,
      }).then(
        (r) => cb && cb({ status: r.status }),
        (error) => cb && cb({ error })
      )
    } else {
      nav.sendBeacon && nav.sendBeacon(api, body)
      cb && cb()
    }
  }

  // The one place every event goes through: exclusions, payload, before-send hook, transport.
  // Returns true when the event was sent.
  function send(name, o, extra) {
    var cb = o.callback
    var custom = opts.customProperties
    var hook = opts.transformRequest || w[attr('before-send')]
    var p = { n: name, v: VERSION, u: o.u || o.url || loc.href, d: domain, r: d.referrer || null }
    if (ignored()) return cb && cb()
    if (typeof custom == 'function') custom = custom(name)
    if (custom || o.props) p.p = Object.assign({}, custom, o.props)
    if (o.revenue) p.$ = o.revenue
    if (o.interactive === false) p.i = false
    if (hashMode) p.h = 1
    // Automation is reported, not swallowed: the gateway drops it as `bot` and counts it.
    if (bot) p.b = 1
    Object.assign(p, extra)
    if (hook && !(p = hook(p))) return cb && cb()
    post(JSON.stringify(p), cb)
    return 1
  }

  // Engagement, as Plausible measures it: only visible and focused time counts, each event
  // carries the delta since the last one, and it inherits the pageview's url and props.
  function engage(t, sd) {
    t = engTime + (engStart && now() - engStart)
    sd = Math.min(100, Math.round((maxPx / height) * 100)) || 0
    if (pv && (sd > sentDepth || t >= MIN_ENGAGEMENT_MS)) {
      sentDepth = sd
      engTime = 0
      engStart = engStart && now()
      send('engagement', pv, { sd, e: t })
    }
  }

  var docHeight = (b) =>
    Math.max(
      (b = d.body || root).scrollHeight,
      b.offsetHeight,
      b.clientHeight,
      root.scrollHeight,
      root.offsetHeight,
      root.clientHeight
    )
  var scrolled = () =>
    (maxPx = Math.max(maxPx, (w.scrollY || root.scrollTop) + (w.innerHeight || root.clientHeight)))
  var engaged = () => d.visibilityState == 'visible' && d.hasFocus()

  function activity() {
    if (engaged()) engStart = engStart || now()
    else {
      if (engStart) engTime += now() - engStart
      engStart = 0
      engage()
    }
  }

  function page(o, spa) {
    var key = path()
    if (spa && key == lastKey) return
    lastKey = key
    // The "exit" of the previous (virtual) page goes out before the new pageview.
    engage()
    pv = send('pageview', o) && { u: o.u || o.url || loc.href, props: o.props }
    engTime = maxPx = 0
    sentDepth = -1
    engStart = engaged() && now()
    height = docHeight()
    scrolled()
    if (!listening) {
      listening = 1
      on(d, 'visibilitychange', activity)
      on(w, 'blur', activity)
      on(w, 'focus', activity)
      on(w, 'scroll', scrolled, { passive: true })
      if (w.ResizeObserver) new ResizeObserver(() => (height = docHeight())).observe(root)
    }
  }

  function linkClick(e, a, ext) {
    a = e.target.closest && e.target.closest('a[href]')
    if (!a || !/^http/.test(a.protocol) || (e.type == 'auxclick' && e.button != 1)) return
    ext = /\.(\w+)$/.exec(a.pathname)
    // Never preventDefault: keepalive lets the request outlive the page, so navigation is untouched.
    if (
      ext &&
      (flag('fileDownloads', 'file-downloads') || attr('file-types')) &&
      list((opts.fileDownloads || {}).fileExtensions || attr('file-types') || DOWNLOAD_TYPES).includes(
        ext[1].toLowerCase()
      )
    )
      track('File Download', { props: { url: a.origin + a.pathname } })
    else if (a.host != loc.host && flag('outboundLinks', 'outbound-links'))
      track('Outbound Link: Click', { props: { url: a.href } })
  }

  // Visiting the page with this fragment flips the opt-out, so it works on phones too.
  function toggle(off) {
    if (loc.hash == TOGGLE_FRAGMENT)
      try {
        off = localStorage[IGNORE_KEY] == 'true'
        off ? localStorage.removeItem(IGNORE_KEY) : (localStorage[IGNORE_KEY] = 'true')
        alert(off ? 'Analytics: this browser is counted again' : 'Analytics: this browser is now ignored')
      } catch (e) {}
  }

  function start(o) {
    if (opts) return console.warn('plausible: init ignored, already initialised')
    opts = o || {}
    api = opt('endpoint', 'api') || (script && script.src ? new URL(script.src).origin : '') + '/api/event'
    domain = opt('domain', 'domain') || loc.hostname
    hashMode = flag('hashBasedRouting', 'hash')
    allowLocal = flag('captureOnLocalhost', 'allow-localhost')
    dnt = flag('respectDoNotTrack', 'dnt')
    bot =
      !flag('allowAutomation', 'allow-automation') &&
      !!(nav.webdriver || w._phantom || w.callPhantom || w.__nightmare || w.Cypress || w.domAutomation)
    include = patterns('include')
    exclude = patterns('exclude')

    on(d, 'click', linkClick)
    on(d, 'auxclick', linkClick)
    on(d, 'submit', (e) => {
      e = e.target
      if (flag('formSubmissions', 'form-submissions') && (e.noValidate || e.checkValidity()))
        track('Form: Submission', {})
    }, true)

    if (opts.autoCapturePageviews !== false && !flag('', 'manual')) {
      var spa = () => page({}, 1)
      if (hashMode) on(w, 'hashchange', spa)
      else {
        ;['pushState', flag('trackReplaceState', 'track-replace') && 'replaceState'].forEach((k, orig) => {
          if ((orig = k && history[k]))
            history[k] = function () {
              orig.apply(this, arguments)
              spa()
            }
        })
        on(w, 'popstate', spa)
      }
      // A page restored from the back/forward cache is a new view of it.
      on(w, 'pageshow', (e) => e.persisted && page({}))
      // Prerendered and background pages count once they are first shown.
      var first = () =>
        d.visibilityState == 'visible' && (d.removeEventListener('visibilitychange', first), page({}), 1)
      first() || on(d, 'visibilitychange', first)
    }
    queue.splice(0).forEach((args) => track.apply(0, args))
  }

  function track(name, o) {
    if (!opts) return queue.push([name, o])
    o = o || {}
    name == 'pageview' ? page(o) : send(name, o)
  }

  toggle()
  on(w, 'hashchange', toggle)
  track.init = start
  track.l = true
  track.v = VERSION
  w.plausible = track
  // Start now when configured by the snippet's init() or by the legacy data-domain attribute;
  // otherwise wait for plausible.init().
  if (stub && stub.o) start(stub.o)
  else if (attr('domain') != null) start()
})(window, document, navigator, location, history)
