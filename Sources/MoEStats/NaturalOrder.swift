/// The order in which layers are listed (`/v1/layers`, `/v1/summary`, the dashboard): natural,
/// so `syn.2` comes before `syn.10`. Digit runs compare as numbers (leading zeros aside),
/// everything else byte by byte; names that compare equal that way (`l01`, `l1`) fall back to
/// plain byte order, so the order is total and a sort is deterministic.
public enum LayerOrder {
    public static func precedes(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var i = 0, j = 0
        while i < x.count && j < y.count {
            if isDigit(x[i]) && isDigit(y[j]) {
                let si = i, sj = j
                while i < x.count && isDigit(x[i]) { i += 1 }
                while j < y.count && isDigit(y[j]) { j += 1 }
                let p = x[si..<i].drop { $0 == UInt8(ascii: "0") }, q = y[sj..<j].drop { $0 == UInt8(ascii: "0") }
                if p.count != q.count { return p.count < q.count }
                if !p.elementsEqual(q) { return p.lexicographicallyPrecedes(q) }
            } else {
                if x[i] != y[j] { return x[i] < y[j] }
                i += 1
                j += 1
            }
        }
        if (x.count - i) != (y.count - j) { return (x.count - i) < (y.count - j) }
        return a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
}
