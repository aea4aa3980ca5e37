import Foundation
import PackagePlugin

/// Compiles `bpf/portcullis.bpf.c` with clang (`-target bpf`, BTF on) on every
/// build where it or its header changed, and hands the object to the target as a
/// generated Swift source, so the executable is the whole product.
@main
struct EmbedBPFObject: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let bpfDirectory = context.package.directoryURL.appending(path: "bpf")
        let script = bpfDirectory.appending(path: "build-object.sh")
        let object = context.pluginWorkDirectoryURL.appending(path: "portcullis.bpf.o")
        let swiftSource = context.pluginWorkDirectoryURL.appending(path: "EmbeddedBPFObject.swift")
        let clang = try context.tool(named: "clang").url
        return [
            .buildCommand(
                displayName: "Compiling XDP program bpf/portcullis.bpf.c",
                executable: URL(fileURLWithPath: "/bin/sh"),
                arguments: [script.path, clang.path, object.path, swiftSource.path],
                inputFiles: [
                    script,
                    bpfDirectory.appending(path: "portcullis.bpf.c"),
                    bpfDirectory.appending(path: "portcullis.h"),
                ],
                outputFiles: [swiftSource]
            )
        ]
    }
}
