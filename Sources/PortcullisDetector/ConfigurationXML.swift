import PortcullisCore

/// The XML of ossec.conf-style files: elements, text, comments, CDATA, the
/// five entities and character references, with the line of every element.
/// Wazuh reads ossec.conf with a small reader of its own (os_xml) rather than a
/// general XML library, and so does Portcullis: libxml2 would bring ICU into
/// the start-up of every process, the Wazuh active response's included, which
/// must finish in a few milliseconds. Attributes are kept (Wazuh's rule files
/// carry `id`, `level`, `frequency` in them); a DTD is refused.
///
/// The reader is bounded: a document larger than ``maximumBytes`` or nested
/// deeper than ``maximumDepth`` is refused with the line where it went wrong.
/// It keeps an explicit stack instead of recursing, so no input can exhaust the
/// thread's stack, and because the depth is bounded, neither can releasing the tree.
struct ConfigurationXML {
    /// Wazuh's largest shipped rule file is a few hundred kilobytes; this leaves room for
    /// generous local files while keeping a mistaken path (a log, a core file) out.
    static let maximumBytes = 16 << 20
    /// ossec.conf and rule files nest four or five levels; 64 is far beyond any real file.
    static let maximumDepth = 64

    struct Failure: Error {
        let line: Int
        let message: String
    }

    /// Parses a document that may hold several top-level elements (ossec.conf
    /// allows several <ossec_config> sections), all returned as children of one root.
    static func parse(_ bytes: [UInt8]) throws(Failure) -> Element {
        guard bytes.count <= maximumBytes else {
            throw Failure(line: 1, message: "the file has \(bytes.count) bytes, more than the \(maximumBytes) this reader accepts")
        }
        var reader = ConfigurationXML(bytes: bytes)
        return try reader.document()
    }

    private let bytes: [UInt8]
    private var index = 0
    private var line = 1

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private mutating func document() throws(Failure) -> Element {
        let root = Element(name: "", line: 1)
        var stack = [root]
        while index < bytes.count {
            if starts(with: "<!--") {
                try skip(past: "-->", what: "comment")
            } else if starts(with: "<![CDATA[") {
                let start = index + 9
                try skip(past: "]]>", what: "CDATA section")
                stack[stack.count - 1].characters += String(decoding: bytes[start..<(index - 3)], as: UTF8.self)
            } else if starts(with: "<?") {
                try skip(past: "?>", what: "processing instruction")
            } else if starts(with: "<!") {
                throw Failure(line: line, message: "a DTD or declaration is not allowed")
            } else if starts(with: "</") {
                advance(2)
                let name = try self.name()
                skipSpace()
                guard take(">") else { throw Failure(line: line, message: "expected > after </\(name)") }
                guard stack.count > 1, let open = stack.last, open.name == name else {
                    throw Failure(line: line, message: "</\(name)> closes no open <\(name)>")
                }
                stack.removeLast()
            } else if starts(with: "<") {
                let startLine = line
                advance(1)
                let element = Element(name: try self.name(), line: startLine)
                let selfClosing = try attributes(into: element)
                // The root is not a level of the document, hence the `- 1`.
                if !selfClosing && stack.count - 1 >= Self.maximumDepth {
                    throw Failure(line: startLine, message: "<\(element.name)> is nested more than \(Self.maximumDepth) elements deep")
                }
                stack[stack.count - 1].children.append(element)
                if !selfClosing { stack.append(element) }
            } else {
                let start = index
                while index < bytes.count && bytes[index] != UInt8(ascii: "<") { advance(1) }
                let text = try decodeEntities(bytes[start..<index])
                if stack.count == 1 {
                    guard text.allSatisfy(\.isWhitespace) else { throw Failure(line: line, message: "text outside any element") }
                } else {
                    stack[stack.count - 1].characters += text
                }
            }
        }
        if stack.count > 1, let unclosed = stack.last {
            throw Failure(line: line, message: "<\(unclosed.name)> (line \(unclosed.line)) is never closed")
        }
        return root
    }

    private func starts(with text: String) -> Bool {
        let prefix = Array(text.utf8)
        return bytes.count - index >= prefix.count && bytes[index..<(index + prefix.count)].elementsEqual(prefix)
    }

    private mutating func advance(_ count: Int) {
        for _ in 0..<count where index < bytes.count {
            if bytes[index] == UInt8(ascii: "\n") { line += 1 }
            index += 1
        }
    }

    private mutating func take(_ character: Unicode.Scalar) -> Bool {
        guard index < bytes.count, bytes[index] == UInt8(ascii: character) else { return false }
        advance(1)
        return true
    }

    private mutating func skipSpace() {
        while index < bytes.count, [9, 10, 13, 32].contains(bytes[index]) { advance(1) }
    }

    private mutating func skip(past terminator: String, what: String) throws(Failure) {
        let startLine = line
        while index < bytes.count {
            if starts(with: terminator) {
                advance(terminator.utf8.count)
                return
            }
            advance(1)
        }
        throw Failure(line: startLine, message: "a \(what) is never closed")
    }

    private mutating func name() throws(Failure) -> String {
        let start = index
        while index < bytes.count {
            let byte = bytes[index]
            let isNameByte = (byte >= 0x80) || (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
            guard isNameByte else { break }
            advance(1)
        }
        guard index > start else { throw Failure(line: line, message: "expected an element name") }
        return String(decoding: bytes[start..<index], as: UTF8.self)
    }

    /// Reads the attributes into `element` up to the end of a start tag; true for `/>`.
    private mutating func attributes(into element: Element) throws(Failure) -> Bool {
        while true {
            skipSpace()
            if take(">") { return false }
            if starts(with: "/>") {
                advance(2)
                return true
            }
            let attributeName = try name()
            skipSpace()
            guard take("=") else { throw Failure(line: line, message: "expected = in an attribute") }
            skipSpace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") || bytes[index] == UInt8(ascii: "'") else {
                throw Failure(line: line, message: "an attribute value must be quoted")
            }
            let quote = bytes[index]
            advance(1)
            let start = index
            while index < bytes.count && bytes[index] != quote { advance(1) }
            guard index < bytes.count else { throw Failure(line: line, message: "an attribute value is never closed") }
            element.attributes.append((attributeName, try decodeEntities(bytes[start..<index])))
            advance(1)
        }
    }

    private func decodeEntities(_ text: ArraySlice<UInt8>) throws(Failure) -> String {
        guard text.contains(UInt8(ascii: "&")) else { return String(decoding: text, as: UTF8.self) }
        var result = ""
        var rest = Substring(String(decoding: text, as: UTF8.self))
        while let ampersand = rest.firstIndex(of: "&") {
            result += rest[..<ampersand]
            guard let semicolon = rest[ampersand...].firstIndex(of: ";") else {
                throw Failure(line: line, message: "an & that starts no entity (write &amp;)")
            }
            let entity = rest[rest.index(after: ampersand)..<semicolon]
            switch entity {
            case "lt": result += "<"
            case "gt": result += ">"
            case "amp": result += "&"
            case "quot": result += "\""
            case "apos": result += "'"
            default:
                let number: UInt32? = entity.hasPrefix("#x") ? UInt32(entity.dropFirst(2), radix: 16)
                    : entity.hasPrefix("#") ? UInt32(entity.dropFirst()) : nil
                guard let number, let scalar = Unicode.Scalar(number) else {
                    throw Failure(line: line, message: "unknown entity &\(entity);")
                }
                result.unicodeScalars.append(scalar)
            }
            rest = rest[rest.index(after: semicolon)...]
        }
        return result + rest
    }
}

/// A parsed XML element with the line it starts on.
final class Element {
    let name: String
    let line: Int
    var children: [Element] = []
    var characters = ""
    /// In document order; a name may repeat, and the first one counts (see ``attribute(_:)``).
    var attributes: [(name: String, value: String)] = []
    init(name: String, line: Int) { (self.name, self.line) = (name, line) }
    var text: String { characters.trimmedSpace }
    func attribute(_ name: String) -> String? { attributes.first { $0.name == name }?.value }
}
