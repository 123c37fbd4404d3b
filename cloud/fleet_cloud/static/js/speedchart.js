// Speed over time on a <canvas> (no chart library): area plot, km/h grid,
// time ticks, and a cursor the playback moves. The plot is cached in an
// offscreen canvas so moving the cursor at 60 frames/s redraws one line.

import { isNum } from './format.js';

const PAD = { left: 44, right: 10, top: 8, bottom: 20 };
const STEPS_KMH = [10, 20, 25, 50, 100];

export class SpeedChart {
  constructor(canvas) {
    this.canvas = canvas;
    this.t = [];
    this.spd = [];
    this.cursor = null;
    this.cache = document.createElement('canvas');
    new ResizeObserver(() => this.redraw()).observe(canvas);
  }

  setData(t, spd) {
    this.t = t;
    this.spd = spd;
    this.redraw();
  }

  setCursor(t) {
    this.cursor = t;
    this.paintCursor();
  }

  /** The time under a client x coordinate (for click-to-seek), clamped to the data. */
  timeAt(clientX) {
    if (!this.t.length) return null;
    const r = this.canvas.getBoundingClientRect();
    const w = r.width - PAD.left - PAD.right;
    const f = Math.min(1, Math.max(0, (clientX - r.left - PAD.left) / w));
    const t0 = this.t[0], t1 = this.t[this.t.length - 1];
    return t0 + f * (t1 - t0);
  }

  redraw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.clientHeight * dpr));
    for (const x of [c, this.cache]) { x.width = w; x.height = h; }
    const g = this.cache.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const W = c.clientWidth, H = c.clientHeight;
    g.clearRect(0, 0, W, H);
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = '#5f6b7a';
    const n = this.t.length;
    if (n < 2) {
      g.fillText(n ? 'One position only: no speed curve' : 'No positions loaded', PAD.left, H / 2);
      this.paintCursor();
      return;
    }
    const t0 = this.t[0], t1 = this.t[n - 1];
    const maxSpd = Math.max(10, ...this.spd.filter(isNum));
    const step = STEPS_KMH.find((s) => maxSpd / s <= 4) || 100;
    const top = Math.ceil(maxSpd / step) * step;
    const pw = W - PAD.left - PAD.right, ph = H - PAD.top - PAD.bottom;
    const x = (t) => PAD.left + ((t - t0) / (t1 - t0 || 1)) * pw;
    const y = (v) => PAD.top + ph - (v / top) * ph;
    this.geom = { x, t0, t1 };

    g.strokeStyle = '#e3e8ee';
    g.lineWidth = 1;
    g.textAlign = 'right';
    g.textBaseline = 'middle';
    for (let v = 0; v <= top; v += step) {
      g.beginPath(); g.moveTo(PAD.left, y(v) + 0.5); g.lineTo(W - PAD.right, y(v) + 0.5); g.stroke();
      g.fillText(String(v), PAD.left - 6, y(v));
    }
    g.save();
    g.translate(10, PAD.top + ph / 2);
    g.rotate(-Math.PI / 2);
    g.textAlign = 'center';
    g.fillText('km/h', 0, 0);
    g.restore();

    g.textAlign = 'center';
    g.textBaseline = 'top';
    const ticks = Math.max(2, Math.min(6, Math.floor(pw / 90)));
    const short = t1 - t0 < 3 * 3600_000;
    for (let i = 0; i <= ticks; i += 1) {
      const t = t0 + ((t1 - t0) * i) / ticks;
      const d = new Date(t);
      const label = short ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' })
        : d.toLocaleString([], { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
      g.fillText(label, Math.min(W - PAD.right - 24, Math.max(PAD.left + 24, x(t))), H - PAD.bottom + 5);
    }

    g.beginPath();
    g.moveTo(x(t0), y(0));
    for (let i = 0; i < n; i += 1) g.lineTo(x(this.t[i]), y(isNum(this.spd[i]) ? this.spd[i] : 0));
    g.lineTo(x(t1), y(0));
    g.closePath();
    g.fillStyle = 'rgba(15, 118, 110, 0.18)';
    g.fill();
    g.beginPath();
    for (let i = 0; i < n; i += 1) {
      const px = x(this.t[i]), py = y(isNum(this.spd[i]) ? this.spd[i] : 0);
      if (i) g.lineTo(px, py); else g.moveTo(px, py);
    }
    g.strokeStyle = '#0f766e';
    g.lineWidth = 1.5;
    g.stroke();
    this.paintCursor();
  }

  paintCursor() {
    const c = this.canvas;
    const g = c.getContext('2d');
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, c.width, c.height);
    g.drawImage(this.cache, 0, 0);
    if (this.cursor == null || !this.geom || this.t.length < 2) return;
    const dpr = window.devicePixelRatio || 1;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const px = Math.round(this.geom.x(this.cursor)) + 0.5;
    g.strokeStyle = '#b42318';
    g.lineWidth = 1.5;
    g.beginPath(); g.moveTo(px, PAD.top); g.lineTo(px, c.clientHeight - PAD.bottom); g.stroke();
  }
}
