// Page-side reader of the in-picture capture clock (src/demo/clock.rs documents the
// layout; scripts/clock-filter.sh draws the same strip with ffmpeg). Injected into any
// player page by web/tests/latency.mjs: it finds the page's <video>, and for every frame
// the browser presents (requestVideoFrameCallback, else requestAnimationFrame) it draws
// the strip at the bottom of the picture onto a small canvas, decodes the capture time
// and records
//   camera-to-eye = (wall clock when the frame is shown) - (capture time in the picture).
// Nothing here trusts a playlist or a program date time. window.__clock holds the
// samples; window.__clock.take() returns and clears them.
(() => {
  "use strict";
  const CELLS = 32, BITS = 28, STRIP_DIV = 12, MOD = 2 ** BITS;
  const SAMPLE_W = CELLS * 4, SAMPLE_H = 4;
  const st = { samples: [], frames: 0, unreadable: 0, last: null };
  window.__clock = {
    take() {
      const out = { samples: st.samples, frames: st.frames, unreadable: st.unreadable, last: st.last };
      st.samples = [];
      st.frames = 0;
      st.unreadable = 0;
      return out;
    },
  };
  let canvas, ctx;

  // The capture time modulo 2^28 ms, or null when the strip does not read cleanly.
  function decode(video) {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) return null;
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.width = SAMPLE_W;
      canvas.height = SAMPLE_H;
      ctx = canvas.getContext("2d", { willReadFrequently: true });
    }
    const strip = Math.floor(h / STRIP_DIV);
    // The middle half of the strip's rows, scaled to 4 samples a cell.
    ctx.drawImage(video, 0, h - strip + strip / 4, w, strip / 2, 0, 0, SAMPLE_W, SAMPLE_H);
    const px = ctx.getImageData(0, 0, SAMPLE_W, SAMPLE_H).data;
    // Luma of the middle two samples of cell i, on the middle rows.
    const luma = (i) => {
      let s = 0;
      for (const y of [1, 2]) {
        for (const dx of [1, 2]) {
          const o = (y * SAMPLE_W + i * 4 + dx) * 4;
          s += 0.299 * px[o] + 0.587 * px[o + 1] + 0.114 * px[o + 2];
        }
      }
      return s / 4;
    };
    const white = luma(0), black = luma(1);
    if (white - black < 64) return null;
    const mid = (white + black) / 2;
    let m = 0, ones = 0;
    for (let i = 2; i <= 29; i++) {
      const v = luma(i);
      // A cell near the threshold is a blurred or half-drawn strip: not a reading.
      if (Math.abs(v - mid) < (white - black) / 4) return null;
      const bit = v > mid ? 1 : 0;
      m = m * 2 + bit;
      ones += bit;
    }
    const parity = luma(30) > mid ? 1 : 0;
    if (parity !== ones % 2 || luma(31) <= mid) return null;
    return m;
  }

  function onFrame(video, displayWallMs) {
    st.frames++;
    let m;
    try {
      m = decode(video);
    } catch (e) {
      m = null; // a tainted or not yet decodable frame
    }
    if (m === null) {
      st.unreadable++;
      return;
    }
    // Both ends are wall clocks of this machine; the strip holds them modulo 2^28 ms.
    let d = (((Math.round(displayWallMs) % MOD) - m) % MOD + MOD) % MOD;
    if (d > MOD / 2) d -= MOD;
    // Anything over a minute either way is no reading of this clock.
    if (Math.abs(d) > 60000) {
      st.unreadable++;
      return;
    }
    st.samples.push(d);
    st.last = d;
  }

  function attach(video) {
    if (video.__clockAttached) return;
    video.__clockAttached = true;
    if (video.requestVideoFrameCallback) {
      const cb = (now, meta) => {
        // The wall clock at the moment the compositor shows the frame.
        onFrame(video, Date.now() + (meta.expectedDisplayTime - performance.now()));
        video.requestVideoFrameCallback(cb);
      };
      video.requestVideoFrameCallback(cb);
    } else {
      let lastTime = -1;
      const tick = () => {
        if (video.currentTime !== lastTime && !video.paused) {
          lastTime = video.currentTime;
          onFrame(video, Date.now());
        }
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    }
  }

  // The player may create its <video> after load; look for it until it is there.
  const find = setInterval(() => {
    const v = document.querySelector("video");
    if (v) {
      attach(v);
      clearInterval(find);
    }
  }, 100);
})();
