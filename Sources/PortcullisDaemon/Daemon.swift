import Glibc
import Hummingbird
import Logging
import PortcullisBPF
import PortcullisConfig
import PortcullisControl
import PortcullisDetector
import PortcullisFleet
import ServiceLifecycle
import UnixSignals
import PortcullisSystem

/// `portcullis run`: attaches to the configured interfaces, serves the control
/// socket and the metrics endpoint, sweeps expired blocks, reloads its
/// configuration on SIGHUP and stops cleanly on SIGTERM, leaving the XDP
/// program and every block in force unless asked to detach.
public enum Daemon {
    public struct StartupError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Everything `run` loads before it starts, checked the same way: the YAML, then the
    /// detector's rule, decoder and active-response files. Returns the warnings `run` would log.
    public static func check(configurationPath: String) throws -> [String] {
        let configuration: DaemonConfiguration
        do {
            configuration = try DaemonConfiguration.load(path: configurationPath)
        } catch {
            throw StartupError(description: error.description)
        }
        if let crowdsec = configuration.crowdsec { _ = try CrowdSecBouncer.readKey(crowdsec.apiKeyFile) }
        guard let detector = configuration.detector else { return [] }
        do {
            let setup = try DetectorSetup.load(
                wazuhRuleset: detector.wazuhRuleset, ruleFiles: detector.rules, activeResponse: detector.activeResponse)
            return setup.warnings.map { "\($0)" }
        } catch {
            throw StartupError(description: error.description)
        }
    }

    /// Runs the daemon until SIGTERM or SIGINT; once per process, as it sets up the process's log.
    public static func run(configurationPath: String, detachOnExit: Bool) async throws {
        LoggingSystem.bootstrap { DaemonLogHandler(label: $0) }
        var logger = Logger(label: "portcullis")
        logger.logLevel = .info
        let configuration: DaemonConfiguration
        do {
            configuration = try DaemonConfiguration.load(path: configurationPath)
        } catch {
            throw StartupError(description: error.description)
        }
        var detectorSetup: (RuleSet, ActiveResponseConfiguration)?
        if let detector = configuration.detector {
            do {
                detectorSetup = try DetectorService.prepare(detector, logger: logger)
            } catch {
                throw StartupError(description: "\(error)")
            }
        }
        let crowdsecKey = try configuration.crowdsec.map { crowdsec throws(StartupError) in try CrowdSecBouncer.readKey(crowdsec.apiKeyFile) }
        let metrics = DaemonMetrics()
        let keeper: BlocklistKeeper
        do {
            keeper = try BlocklistKeeper(configuration: configuration, metrics: metrics, logger: logger)
        } catch {
            throw StartupError(description: error.description)
        }
        await keeper.apply(configuration, previous: nil)
        let fleet = configuration.fleet.map { FleetSync(configuration: $0, writer: keeper, logger: logger) }
        if let fleet, let fleetConfiguration = configuration.fleet {
            await keeper.attach(fleet)
            logger.info("fleet: node \(fleetConfiguration.node), sharing \(fleetConfiguration.share.map(\.rawValue).sorted().joined(separator: ", ")) through \(fleetConfiguration.user)@\(fleetConfiguration.endpoint)/\(fleetConfiguration.database)")
        }

        let socketPath = configuration.controlSocket
        try prepareSocket(at: socketPath)
        let group = getgrnam(configuration.controlGroup)?.pointee.gr_gid
        if group == nil {
            logger.warning("no group \(configuration.controlGroup): the control socket is for root only")
        }
        // Root's own socket, in a directory only root may enter: however many connections the
        // group's members hold open on the shared one, the CLI and the Wazuh response get in.
        let rootSocketPath = ControlSocketClient.rootSocketPath(for: socketPath)
        try prepareRootSocket(at: rootSocketPath)
        let router = ControlAPI.router(keeper: keeper)
        // The socket is created 0660 from the start: no window in which others may connect.
        let previousMask = umask(0o117)
        let control = ControlAPI.server(
            router: router, socketPath: socketPath, connectionLimit: ControlAPI.sharedConnectionLimit,
            label: "portcullis.control", logger: logger
        ) { [logger] in
            umask(previousMask)
            chown(socketPath, 0, group ?? 0)
            chmod(socketPath, 0o660)
            logger.info("control socket ready at \(socketPath)")
        }
        let rootControl = ControlAPI.server(
            router: router, socketPath: rootSocketPath, connectionLimit: ControlAPI.rootConnectionLimit,
            label: "portcullis.control.root", logger: logger
        ) { [logger] in
            logger.info("root's control socket ready at \(rootSocketPath)")
        }

        var services: [any Service] = [control, rootControl, Sweeper(keeper: keeper), Watchdog(keeper: keeper), Reloader(keeper: keeper, path: configurationPath)]
        if let fleet { services.append(FleetService(fleet: fleet)) }
        if let detector = configuration.detector, let (rules, responses) = detectorSetup {
            services.append(DetectorService(keeper: keeper, configuration: detector, rules: rules, responses: responses, logger: logger))
        }
        if let crowdsec = configuration.crowdsec, let crowdsecKey {
            services.append(CrowdSecBouncer(keeper: keeper, configuration: crowdsec, apiKey: crowdsecKey, logger: logger))
        }
        if let address = configuration.metricsAddress {
            let router = Router()
            router.get("metrics") { _, _ in
                let snapshot = try await keeper.reader.metricsSnapshot()
                if let fleet { metrics.recordFleet(fleet.health()) }
                return Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(bytes: metrics.render(snapshot))))
            }
            services.append(Application(
                router: router,
                configuration: .init(address: .hostname(address.host, port: address.port), serverName: "portcullis"),
                onServerRunning: { [logger] _ in logger.info("metrics at http://\(address)/metrics") },
                logger: Logger(label: "portcullis.metrics")))
        }

        let serviceGroup = ServiceGroup(configuration: .init(
            services: services.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        logger.info("portcullis daemon started (pins in \(configuration.pinDirectory))")
        do {
            try await serviceGroup.run()
        } catch {
            unlink(socketPath)
            unlink(rootSocketPath)
            throw error
        }
        unlink(socketPath)
        unlink(rootSocketPath)
        let detachConfigured = await keeper.configuration.detachOnExit
        if detachOnExit || detachConfigured {
            await keeper.detachConfiguredInterfaces()
        } else {
            logger.info("stopped; the XDP program and every block stay in force")
        }
    }

    /// Makes root's socket directory (0700, root's: nobody else may even look up the socket)
    /// and clears a socket a dead daemon left there; the shared socket's check already
    /// refused to take over from a live daemon.
    static func prepareRootSocket(at path: String) throws {
        guard let directory = SystemCall.parent(of: path) else { return }
        if case .failure(let error) = SystemCall.makeDirectories(directory, mode: 0o700) {
            throw StartupError(description: "\(error.description) for root's control socket \(path)")
        }
        var info = stat()
        guard lstat(directory, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR, info.st_uid == 0 else {
            throw StartupError(description: "\(directory) must be a directory owned by root; remove it and start again")
        }
        chmod(directory, 0o700)
        unlink(path)
    }

    /// Makes the socket's directory, and clears a socket a dead daemon left
    /// behind, but refuses to take over one a live daemon answers on.
    static func prepareSocket(at path: String) throws {
        if let directory = SystemCall.parent(of: path), case .failure(let error) = SystemCall.makeDirectories(directory, mode: 0o755) {
            throw StartupError(description: "\(error.description) for the control socket \(path)")
        }
        guard access(path, F_OK) == 0 else { return }
        do {
            _ = try ControlSocketClient(path: path).send("GET", "/v1/health")
            throw StartupError(description: "another Portcullis daemon is running on \(path)")
        } catch let error as ControlSocketClient.Failure {
            if case .notRunning = error {
                unlink(path)
                return
            }
            throw StartupError(description: "\(path) exists and cannot be checked: \(error.description)")
        }
    }
}

/// Removes expired blocks every sweep_interval, recording each one's outcome.
struct Sweeper: Service {
    let keeper: BlocklistKeeper

    func run() async throws {
        // Shutdown cancels the sleep; that is the normal way out, not a failure.
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let interval = await keeper.configuration.sweepInterval
                try await Task.sleep(for: interval)
                do {
                    _ = try await keeper.sweep()
                } catch {
                    keeper.logger.error("sweep failed: \(String(describing: error))")
                }
            }
        }
    }
}

/// Every second: are the pins still there and every configured interface attached? When not,
/// the maps are made again from the ledger and the interfaces attached again; until then
/// `/v1/health` answers 503 and `portcullis_dataplane_healthy` is 0.
struct Watchdog: Service {
    let keeper: BlocklistKeeper
    static let interval: Duration = .seconds(1)

    func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await keeper.mend()
                try await Task.sleep(for: Self.interval)
            }
        }
    }
}

/// SIGHUP: read the configuration again. A bad file is reported and the
/// running configuration stays.
struct Reloader: Service {
    let keeper: BlocklistKeeper
    let path: String

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                do {
                    let configuration = try DaemonConfiguration.load(path: path)
                    let previous = await keeper.configuration
                    await keeper.apply(configuration, previous: previous)
                    await keeper.mend()
                    keeper.logger.info("reloaded \(path)")
                    if configuration.fleet != previous.fleet {
                        keeper.logger.warning("fleet changed: it takes effect at the next start")
                    }
                    if configuration.detector != nil || previous.detector != nil {
                        keeper.logger.warning("the detector (its sources, rules, active responses and white list) is not reloaded: restart the daemon to apply changes to it")
                    }
                } catch {
                    keeper.logger.error("not reloaded, the running configuration stays: \(String(describing: error))")
                }
            }
        }
    }
}

/// The fleet's node: publishes this host's changes and applies the others', until shutdown.
/// A database that is down is its own trouble: the daemon goes on enforcing.
struct FleetService: Service {
    let fleet: FleetSync

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await fleet.run()
        }
    }
}
