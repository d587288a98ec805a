// Course timelines (hldm/app/course.py timeline_html): move the playhead with whichever listed audio
// player is playing, and light each S1/S2/murmur interval while the playhead is inside it. The
// players may play at half speed: position is the fraction of the player's duration, times the clip's.
() => {
  const tick = () => {
    for (const tl of document.querySelectorAll(".hldm-timeline")) {
      const seconds = parseFloat(tl.dataset.seconds);
      const players = tl.dataset.players.split(",").map((id) => document.querySelector(`#${id} audio`)).filter(Boolean);
      const audio = players.find((a) => !a.paused) || players.find((a) => a.currentTime > 0);
      const head = tl.querySelector(".hldm-tl-head");
      if (!audio || !audio.duration || !head) continue;
      const t = (audio.currentTime / audio.duration) * seconds;
      head.style.left = `${(100 * t) / seconds}%`;
      for (const iv of tl.querySelectorAll(".hldm-tl-iv")) {
        iv.classList.toggle("on", t >= parseFloat(iv.dataset.a) && t <= parseFloat(iv.dataset.b));
      }
    }
  };
  setInterval(tick, 100);
}
