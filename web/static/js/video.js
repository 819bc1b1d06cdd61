// WebRTC for both pages: one browser ↔ server peer connection per call (the server relays
// the other party's audio and video back on the same transceivers, and records).
//
// PeerLink knows nothing about consent: it is only ever started by VideoCall when the
// server says the contact's video state is `consented`, and the customer page adds its own
// check (`mayStart`) that the customer accepted this attempt in this tab.
//
// Negotiation is non-trickle: gather every ICE candidate, then send one complete SDP.

import { setText } from './i18n.js';

const GATHER_TIMEOUT_MS = 5000;

/** ICE servers from GET /api/ice ({"iceServers": [...]}); [] when absent or failing. */
export async function fetchIceServers() {
  try {
    const response = await fetch('/api/ice', {
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
    });
    if (!response.ok) return [];
    const data = await response.json();
    return Array.isArray(data?.iceServers) ? data.iceServers : [];
  } catch {
    return [];
  }
}

export class VideoError extends Error {
  constructor(code, cause) {
    super(code);
    this.name = 'VideoError';
    this.code = code; // camera | webrtc
    this.cause = cause;
  }
}

/** Camera and microphone; falls back to the camera alone when audio is unavailable. */
async function openCamera() {
  if (!navigator.mediaDevices?.getUserMedia) throw new VideoError('camera');
  try {
    return await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  } catch (first) {
    try {
      return await navigator.mediaDevices.getUserMedia({ video: true });
    } catch {
      throw new VideoError('camera', first);
    }
  }
}

function gatheringComplete(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onChange);
      pc.removeEventListener('icecandidate', onCandidate);
      resolve();
    };
    const onChange = () => {
      if (pc.iceGatheringState === 'complete') done();
    };
    const onCandidate = (event) => {
      if (event.candidate === null) done();
    };
    // Send what we have if gathering hangs (e.g. an unreachable STUN server).
    const timer = setTimeout(done, GATHER_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', onChange);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/** One peer connection with our server: local camera out, the other party's media in. */
export class PeerLink {
  constructor({ localVideo, remoteVideo, onConnectionState = () => {} }) {
    this.localVideo = localVideo;
    this.remoteVideo = remoteVideo;
    this.onConnectionState = onConnectionState;
    this.pc = null;
    this.stream = null;
    this.remoteStream = null;
    this.closed = false;
  }

  /** Camera on, peer connection up; resolves to the complete offer SDP. */
  async start() {
    this.stream = await openCamera();
    if (this.closed) {
      this.stopTracks();
      throw new VideoError('webrtc');
    }
    this.localVideo.srcObject = this.stream;
    this.localVideo.muted = true; // never play our own microphone back
    void this.localVideo.play?.().catch(() => {});
    try {
      const iceServers = await fetchIceServers();
      const pc = new RTCPeerConnection({ iceServers });
      this.pc = pc;
      for (const track of this.stream.getTracks()) pc.addTrack(track, this.stream);
      pc.addEventListener('track', (event) => this.attachRemote(event));
      pc.addEventListener('connectionstatechange', () => this.onConnectionState(pc.connectionState));
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringComplete(pc);
      if (this.closed) throw new VideoError('webrtc');
      return pc.localDescription.sdp;
    } catch (err) {
      throw err instanceof VideoError ? err : new VideoError('webrtc', err);
    }
  }

  attachRemote(event) {
    if (!this.remoteStream) this.remoteStream = new MediaStream();
    if (!this.remoteStream.getTracks().includes(event.track)) this.remoteStream.addTrack(event.track);
    if (this.remoteVideo.srcObject !== this.remoteStream) this.remoteVideo.srcObject = this.remoteStream;
    void this.remoteVideo.play?.().catch(() => {});
  }

  /** The server's answer to our offer. */
  async acceptAnswer(sdp) {
    if (!this.pc || this.closed) return;
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
  }

  /** A server-initiated (re)negotiation: resolves to our complete answer SDP. */
  async answerOffer(sdp) {
    if (!this.pc || this.closed) throw new VideoError('webrtc');
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await gatheringComplete(this.pc);
    return this.pc.localDescription.sdp;
  }

  stopTracks() {
    for (const track of this.stream?.getTracks() ?? []) track.stop();
    this.stream = null;
  }

  /** Camera off, connection closed, both video elements emptied. */
  close() {
    this.closed = true;
    this.stopTracks();
    for (const track of this.remoteStream?.getTracks() ?? []) track.stop();
    this.remoteStream = null;
    if (this.pc) {
      try {
        this.pc.close();
      } catch {
        // already closed
      }
    }
    this.pc = null;
    this.localVideo.srcObject = null;
    this.remoteVideo.srcObject = null;
  }
}

/** Video states in which something is being set up or flowing (server's ACTIVE_VIDEO_STATES). */
export const ACTIVE_STATES = new Set(['requested', 'consent_pending', 'consented', 'negotiating', 'live']);
const MEDIA_STATES = new Set(['consented', 'negotiating', 'live']);

/**
 * The video panel of a page: follows video.* frames for every contact, shows the state of
 * the contact the panel is bound to, and runs the single PeerLink of this tab.
 *
 * els: {state, request, hangup, stage, local, remote}; role: customer | agent.
 * Hooks: mayStart(contactId) → bool (consent check), onNotice(message, level),
 * onChange(contactId) after any state change (lists, labels).
 */
export class VideoCall {
  constructor({ rt, role, els, mayStart = () => true, onNotice = () => {}, onChange = () => {} }) {
    this.rt = rt;
    this.role = role;
    this.els = els;
    this.mayStart = mayStart;
    this.onNotice = onNotice;
    this.onChange = onChange;
    this.states = new Map(); // contact id → video state
    this.requestedBy = new Map(); // contact id → customer | agent (last video.requested)
    this.contactId = null; // the contact the panel shows
    this.canRequest = false; // page says the bound contact may have video (assigned)
    this.link = null;
    this.linkContact = null;
    this.offerRef = null;

    rt.on('video.state', (f) => this.onState(f.contact_id, f.state));
    rt.on('video.requested', (f) => {
      this.requestedBy.set(f.contact_id, f.by);
      this.changed(f.contact_id);
    });
    rt.on('video.answer', (f) => void this.onAnswer(f));
    rt.on('video.offer', (f) => void this.onServerOffer(f));
    rt.on('video.ended', (f) => this.onEnded(f.contact_id, f.reason));
    rt.on('error', (f) => {
      if (f.ref_id && f.ref_id === this.offerRef) {
        this.offerRef = null;
        this.teardown();
      }
    });
    // Video never survives a dropped socket: the server ends the attempt.
    rt.on('close', () => {
      for (const [id, state] of this.states) {
        if (ACTIVE_STATES.has(state)) this.states.set(id, 'ended');
      }
      if (this.link) this.teardown();
      this.render();
    });
    for (const type of ['contact.closed', 'contact.gone']) {
      rt.on(type, (f) => this.forget(f.contact_id));
    }
    els.request.addEventListener('click', () => this.request());
    els.hangup.addEventListener('click', () => this.hangup());
    this.render();
  }

  state(contactId) {
    return this.states.get(contactId) ?? 'none';
  }

  /** The contact whose call is set up or running in this tab, if any. */
  activeContact() {
    for (const [id, state] of this.states) if (ACTIVE_STATES.has(state)) return id;
    return null;
  }

  /** Show `contactId` in the panel; `canRequest`: it is assigned, video may be asked for. */
  bind(contactId, canRequest) {
    this.contactId = contactId;
    this.canRequest = Boolean(canRequest);
    this.render();
  }

  forget(contactId) {
    if (this.linkContact === contactId) this.teardown();
    this.states.delete(contactId);
    this.requestedBy.delete(contactId);
    this.changed(contactId);
  }

  changed(contactId) {
    this.render();
    this.onChange(contactId);
  }

  onState(contactId, state) {
    const previous = this.state(contactId);
    this.states.set(contactId, state);
    if (state === 'requested' && previous !== 'requested' && !this.requestedBy.has(contactId)) {
      // a video.requested frame may not precede the state: the customer is the only one
      // who can put a contact in `requested`
      this.requestedBy.set(contactId, 'customer');
    }
    if (!ACTIVE_STATES.has(state)) this.requestedBy.delete(contactId);
    if (state === 'consented' && !this.link) void this.startMedia(contactId);
    if (!MEDIA_STATES.has(state) && this.linkContact === contactId) this.teardown();
    this.changed(contactId);
  }

  onEnded(contactId, reason) {
    this.states.set(contactId, 'ended');
    this.requestedBy.delete(contactId);
    const wasLinked = this.linkContact === contactId;
    if (wasLinked) this.teardown();
    const wasShown = contactId === this.contactId || wasLinked;
    // `closed`: the page reports the end of the whole conversation instead
    if (wasShown && reason !== 'closed') {
      const known = ['hangup', 'declined', 'ice_failed', 'disconnect', 'transfer', 'error'];
      const level = reason === 'hangup' || reason === 'declined' ? 'info' : 'error';
      this.onNotice({ key: `video.ended.${known.includes(reason) ? reason : 'error'}` }, level);
    }
    this.changed(contactId);
  }

  async startMedia(contactId) {
    if (!this.mayStart(contactId)) return; // never a camera without this tab's consent
    const link = new PeerLink({
      localVideo: this.els.local,
      remoteVideo: this.els.remote,
      onConnectionState: (s) => {
        this.els.stage.dataset.connection = s;
      },
    });
    this.link = link;
    this.linkContact = contactId;
    this.render();
    try {
      const sdp = await link.start();
      if (this.link !== link) return;
      this.offerRef = this.rt.send('video.offer', { contact_id: contactId, sdp });
      if (this.offerRef === null) throw new Error('offline');
    } catch (err) {
      if (this.link !== link) return;
      this.teardown();
      const code = err?.code === 'camera' ? 'video.camera_failed' : 'video.setup_failed';
      this.onNotice({ key: code }, 'error');
      this.rt.send('video.hangup', { contact_id: contactId });
    }
  }

  async onAnswer(frame) {
    if (!this.link || frame.contact_id !== this.linkContact) return;
    const link = this.link;
    try {
      await link.acceptAnswer(frame.sdp);
    } catch {
      if (this.link !== link) return;
      this.teardown();
      this.onNotice({ key: 'video.setup_failed' }, 'error');
      this.rt.send('video.hangup', { contact_id: frame.contact_id });
    }
  }

  async onServerOffer(frame) {
    if (!this.link || frame.contact_id !== this.linkContact) return;
    try {
      const sdp = await this.link.answerOffer(frame.sdp);
      this.rt.send('video.answer', { contact_id: frame.contact_id, sdp });
    } catch {
      this.onNotice({ key: 'video.setup_failed' }, 'error');
    }
  }

  teardown() {
    const link = this.link;
    this.link = null;
    this.linkContact = null;
    this.offerRef = null;
    link?.close();
    delete this.els.stage.dataset.connection;
    this.render();
  }

  request() {
    const id = this.contactId;
    if (!id || !this.requestAllowed()) return;
    if (this.rt.send('video.request', { contact_id: id }) === null) {
      this.onNotice({ key: 'ws_errors.offline' }, 'error');
    }
  }

  hangup() {
    const id = this.linkContact ?? this.contactId;
    if (!id) return;
    if (this.linkContact === id) this.teardown(); // camera off at once, whatever the network
    if (this.rt.send('video.hangup', { contact_id: id }) === null) {
      this.states.set(id, 'ended');
      this.changed(id);
    }
  }

  requestAllowed() {
    const id = this.contactId;
    if (!id || !this.canRequest) return false;
    const state = this.state(id);
    const busyElsewhere = [...this.states].some(([other, s]) => other !== id && ACTIVE_STATES.has(s));
    if (busyElsewhere) return false;
    if (this.role === 'agent') {
      // the agent accepts a customer's request by requesting too
      return state === 'none' || state === 'ended' || state === 'requested';
    }
    return state === 'none' || state === 'ended';
  }

  render() {
    const { state: stateEl, request, hangup, stage } = this.els;
    const id = this.contactId;
    const state = id ? this.state(id) : 'none';
    stateEl.dataset.state = state;
    setText(stateEl, { key: `video.state.${this.role}.${state}` });
    request.disabled = !this.requestAllowed();
    const accepting = this.role === 'agent' && state === 'requested';
    // while a call is set up or running, the only action is to end it
    request.hidden = ACTIVE_STATES.has(state) && !accepting;
    setText(request, accepting ? { key: 'video.accept' } : { key: 'video.request' });
    hangup.hidden = !(id && ACTIVE_STATES.has(state));
    if (MEDIA_STATES.has(state)) setText(hangup, { key: 'video.hangup' });
    else if (accepting) setText(hangup, { key: 'video.decline' });
    else setText(hangup, { key: 'video.cancel' });
    const showStage = this.link !== null && this.linkContact === id;
    stage.hidden = !showStage;
    stage.dataset.state = state;
  }
}
