/** The lock API's peer route, `POST /v1/peer`, and its replication-stream frame (peer_stream.ts). */
import type { PeerMessage } from "../../lib/core/lock/lock_replica.ts";
import type { Settings } from "../../lib/settings.ts";
import { readPeerRequest, RequestError } from "../http_util.ts";
import type { LockService } from "./service.ts";
import { encodePeerBody } from "../peer_transport.ts";
import { checkPeerRequest } from "../../lib/wire/lock_peer.ts";
import type { AuthenticatedSender } from "../peer_auth.ts";
import { errorAnswer } from "./api_answers.ts";
import type { LockApiOptions } from "./api_options.ts";

/**
 * `POST /v1/peer` on the body's text: `done` gets the answer's JSON text (at once, or with
 * a durable log once the disk has what an ack acknowledges), and the message is returned (the
 * simulator's observers read its epoch). The core checks the sender and the epoch; here only
 * the shape is checked, so a malformed message throws a RequestError and changes nothing.
 * `sender`: who the request authenticated as (peer_auth.ts); a body claiming another is refused.
 * The simulator's network is trusted: it passes none.
 */
export function answerPeer(service: LockService, settings: Settings, text: string, done: (body: string) => void, sender?: AuthenticatedSender): PeerMessage {
  let message: PeerMessage;
  try {
    message = readPeerRequest(text, settings.peerBodyBytesMax, (value) => checkPeerRequest(value, settings));
  } catch (error) {
    if (error instanceof RequestError) service.security.refused("peerMalformed", sender?.id ?? "peer", { message: error.message });
    throw error;
  }
  sender?.check(message.from);
  service.peerMessageThen(message, (answer) => done(encodePeerBody(answer)));
  return message;
}


/**
 * `answerPeer` for a frame of the replication stream (peer_stream.ts): `done` gets the status and
 * body the HTTP route would answer (200 and the answer, or the error a refusal is).
 */
export function answerPeerFrame(service: LockService, options: LockApiOptions, text: string, sender: AuthenticatedSender | undefined, done: (status: number, body: string) => void): void {
  // The answer may come within the call; an error thrown by `done` itself (the socket's send) is
  // not the request's refusal: the frame is answered once, never twice.
  let answered = false;
  try {
    answerPeer(service, options.settings, text, (body) => {
      answered = true;
      done(200, body);
    }, sender);
  } catch (error) {
    if (answered) throw error;
    const answer = errorAnswer(error as Error, options);
    done(answer.status, JSON.stringify(answer.body));
  }
}
