/// The fail2ban actions `portcullis fail2ban install` writes, kept in the binary so an
/// installed portcullis needs no copy of the repository.
enum Fail2banActions {
    /// action.d/portcullis.conf: a shell action, one `portcullis` process per ban. It works
    /// without the daemon too (the command then writes the pinned maps itself).
    static let shell = """
        # Portcullis: fail2ban's bans as XDP blocks (written by `portcullis fail2ban install`).
        #
        # Each ban is a block of source fail2ban and origin fail2ban/<name> (the jail), ending at
        # the ban's <time> plus its <bantime> (-1: permanent), so a ban restored after a restart
        # ends when it would have. actionunban and actionflush lift only this jail's own blocks.
        # bantime.increment prolongs a ban through actionprolong, which lengthens the block.
        #
        # portcullis.py does the same inside fail2ban-server, without a process per ban.

        [Definition]

        actionstart =
        actionstop =
        actioncheck =

        actionban = portcullis fail2ban ban <name> <ip> --time <time> --bantime <bantime> --bancount <bancount> --restored <restored>

        actionprolong = %(actionban)s

        actionunban = portcullis fail2ban unban <name> <ip>

        actionflush = portcullis fail2ban flush <name>

        [Init]

        """

    /// action.d/portcullis.py: an action inside fail2ban-server that speaks the daemon's control
    /// API over its Unix socket, one kept-alive connection, no process per ban.
    static func python(socket: String) -> String {
        #"""
        # Portcullis: fail2ban's bans as XDP blocks (written by `portcullis fail2ban install`).
        #
        # Runs inside fail2ban-server and speaks to the Portcullis daemon's control API over its
        # Unix socket, so a ban costs no process: fail2ban restores every ban of its database at
        # start. Use it in a jail as
        #
        #     action = portcullis.py
        #     action = portcullis.py[socket="/run/portcullis/control.sock", timeout="10"]
        #
        # Each ban is a block of source fail2ban and origin fail2ban/JAIL, ending at the ban's
        # time plus its bantime (-1: permanent), so a ban restored after a restart ends when it
        # would have; bantime.increment prolongs it. An unban, and the flush fail2ban runs when it
        # stops, lift only this jail's own blocks. The daemon must run; without it use
        # portcullis.conf, which falls back to the pinned maps.

        import http.client
        import json
        import socket

        from fail2ban.server.action import ActionBase


        class _UnixConnection(http.client.HTTPConnection):
            def __init__(self, path, timeout):
                super().__init__("localhost", timeout=timeout)
                self._path = path

            def connect(self):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self._path)
                self.sock = sock


        class PortcullisAction(ActionBase):
            def __init__(self, jail, name, socket="\#(socket)", timeout="10", **_):
                super().__init__(jail, name)
                self._socket = socket
                self._timeout = float(timeout)
                self._origin = "fail2ban/" + jail.name
                self._connection = None

            def _call(self, path, body):
                data = json.dumps(body).encode()
                # A kept-alive connection the daemon closed while idle is opened again, once.
                for attempt in (0, 1):
                    if self._connection is None:
                        self._connection = _UnixConnection(self._socket, self._timeout)
                    try:
                        self._connection.request("POST", path, body=data, headers={"Content-Type": "application/json"})
                        response = self._connection.getresponse()
                        payload = response.read()
                    except (OSError, http.client.HTTPException) as error:
                        self._connection.close()
                        self._connection = None
                        if attempt:
                            raise RuntimeError("portcullis: cannot reach the daemon at %s: %s" % (self._socket, error))
                        continue
                    if response.status >= 300:
                        try:
                            message = json.loads(payload).get("error")
                        except ValueError:
                            message = None
                        raise RuntimeError("portcullis: %s" % (message or "the daemon answered %d" % response.status))
                    return json.loads(payload)

            def start(self):
                pass

            def stop(self):
                if self._connection is not None:
                    self._connection.close()
                    self._connection = None

            def ban(self, aInfo):
                bantime = int(aInfo["bantime"])
                restored = int(aInfo["restored"]) == 1
                bancount = int(aInfo["bancount"])
                reason = "fail2ban jail %s" % self._jail.name
                if bancount > 1:
                    reason += ", ban %d" % bancount
                if restored:
                    reason += ", restored"
                body = {"target": str(aInfo["ip"]), "source": "fail2ban", "origin": self._origin, "reason": reason}
                if bantime >= 0:
                    body["duration"] = "%ds" % bantime
                    body["expiresAtUnixMs"] = int(float(aInfo["time"]) * 1000) + bantime * 1000
                self._call("/v1/blocks", body)

            def reban(self, aInfo):
                self.ban(aInfo)

            @property
            def _prolongable(self):
                return True

            def prolong(self, aInfo):
                self.ban(aInfo)

            def unban(self, aInfo):
                self._call("/v1/unblock", {"target": str(aInfo["ip"]), "source": "fail2ban", "onlyOwn": True,
                                           "origin": self._origin})

            def flush(self):
                self._call("/v1/flush", {"source": "fail2ban", "origin": self._origin})
                return True


        Action = PortcullisAction

        """#
    }

    static let jailExample = """
        [DEFAULT]
        # Every jail bans through Portcullis (portcullis.conf for a shell action instead).
        banaction = portcullis.py
        banaction_allports = portcullis.py
        """
}
