/// An ordered list of header fields.
///
/// Names are stored lower-cased: field names are case-insensitive (RFC 9110 section 5.1) and
/// HTTP/2 requires them lower-case on the wire (RFC 9113 section 8.2.1), so both protocol paths
/// produce the same value and lookups need no case folding.
public struct HTTPHeaders: Sendable, Sequence, ExpressibleByDictionaryLiteral {
    public typealias Field = (name: String, value: String)
    public private(set) var fields: [Field]

    public init() { fields = [] }
    public init(_ fields: [Field]) { self.fields = fields.map { ($0.name.asciiLowercased(), $0.value) } }
    /// Fields whose names are already lower-case, as a protocol parser produces them while it
    /// validates each name, so they are not folded a second time on the request path.
    public init(lowercasedFields fields: [Field]) {
        assert(fields.allSatisfy { $0.name == $0.name.asciiLowercased() }, "field names must be lower-case")
        self.fields = fields
    }
    public init(dictionaryLiteral elements: (String, String)...) {
        fields = elements.map { ($0.0.asciiLowercased(), $0.1) }
    }

    public var count: Int { fields.count }
    public func makeIterator() -> IndexingIterator<[Field]> { fields.makeIterator() }

    /// The first value of `name` (any case), or nil.
    public subscript(name: String) -> String? {
        let key = Self.folded(name)
        for f in fields where f.name == key { return f.value }
        return nil
    }

    /// Every value of `name`, in order of appearance.
    public func values(_ name: String) -> [String] {
        let key = Self.folded(name)
        return fields.compactMap { $0.name == key ? $0.value : nil }
    }

    /// The first value of a field whose name the caller already wrote in lower case (a literal
    /// such as `"content-type"`): the per-request lookups of a handler, without folding the
    /// name each time. Stored names are lower-case, so this equals `self[name]` for such names.
    public func value(lowercasedName name: String) -> String? {
        // Byte counts first: most stored names differ in length from the one sought, and a
        // count is read from the string's header, where `==` on two different small strings
        // goes through the general comparison (~60 instructions a field).
        let length = name.utf8.count
        for f in fields where f.name.utf8.count == length && f.name == name { return f.value }
        return nil
    }

    static func folded(_ name: String) -> String { name.asciiLowercased() }

    /// Appends a field; `name` must be a valid token (it is lower-cased here).
    public mutating func add(_ name: String, _ value: String) { fields.append((name.asciiLowercased(), value)) }

    /// Replaces every field called `name` with one field.
    public mutating func set(_ name: String, _ value: String) {
        let key = name.asciiLowercased()
        fields.removeAll { $0.name == key }
        fields.append((key, value))
    }

    public mutating func remove(_ name: String) {
        let key = name.asciiLowercased()
        fields.removeAll { $0.name == key }
    }
}
