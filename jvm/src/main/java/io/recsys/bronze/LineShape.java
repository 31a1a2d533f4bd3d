package io.recsys.bronze;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.StringWriter;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF5;
import org.apache.spark.sql.catalyst.json.JSONOptions;

/**
 * The shape of one landing line, read in one streaming pass: whether it is exactly one JSON object,
 * the names of its fields, the fields nobody declared (at the top level and in one nested object),
 * and the declared fields whose value has the wrong JSON type.
 *
 * <p>Bronze parses each line's values with Spark's {@code from_json} and the declared schema; this
 * finds what that parse cannot say. Arguments: the line, the declared top-level names
 * (comma-separated), the name of the nested object whose unknown fields are kept too, that
 * object's declared names, and the declared fields' JSON types (comma-separated {@code path=kind},
 * such as {@code card.artist_name=text}; see {@link Kind}). It returns a row
 * {@code (problem, keys, extra, extra_nested, replaced, mistyped, normalized)}:
 * <ul>
 *   <li>{@code problem}: NULL for one JSON object, else why the line is not one: {@code invalid JSON}
 *   (which includes {@code NaN} and {@code Infinity}: RFC 8259 has no such numbers), {@code empty line}, {@code not an object}, {@code text after the object} (two events run
 *   together, say: {@code from_json} alone reads the first and drops the second);</li>
 *   <li>{@code keys}: the object's field names in order, repeats included;</li>
 *   <li>{@code extra}, {@code extra_nested}: the unknown fields with their values as text, or NULL
 *   when there are none. A repeated unknown field keeps its last value, as the schema parse does
 *   for declared fields;</li>
 *   <li>{@code replaced}: whether the line holds U+FFFD, the character Spark's decoding puts where
 *   the line's bytes are not UTF-8. A line may also carry that character itself, so only these
 *   lines need their bytes checked, and the rest of a batch pays one {@code indexOf}.</li>
 *   <li>{@code mistyped}: the declared fields whose value their kind does not allow, or NULL when
 *   there are none. Spark renders any JSON value into a string field, so {@code from_json} alone
 *   would read {@code "user_id": true} as the user {@code "true"}.</li>
 *   <li>{@code normalized}: the line with each integral number written with a fraction or an
 *   exponent ({@code 2.0}, {@code 1.5e5}) in an integer field written as an integer, or NULL when it
 *   has none (nearly every line). JSON Schema counts such a number as an integer, so the contract
 *   does, but {@code from_json} fails on it in a long field and renders it as {@code "2.0"} in a
 *   text one, where {@code 2} and {@code "2"} are the same id.</li>
 * </ul>
 * Values are rendered as Spark renders a JSON value into a string field (a string's own text, JSON
 * NULL as NULL, anything else as compact JSON), and the parser is built from Spark's own JSON
 * options, so a line is read here exactly as {@code from_json} reads it.
 */
public final class LineShape implements UDF5<String, String, String, String, String, Row> {
    private static final long serialVersionUID = 1L;

    private static final JsonFactory FACTORY = new JSONOptions(options(), "UTC", "_corrupt_record").buildJsonFactory();
    private static final Map<String, Set<String>> NAMES = new ConcurrentHashMap<>();
    private static final Map<String, Fields> FIELDS = new ConcurrentHashMap<>();
    /** An integral number with more digits than this is no id or count: it is mistyped, not expanded. */
    private static final int MAX_INTEGER_DIGITS = 64;

    /** What JSON a declared field may hold, besides null. */
    enum Kind {
        /** A string, or a number read as its text. */
        TEXT,
        /** A text, or a list of them (the contract's {@code genre}). */
        TEXTS,
        /** A string or an integer (the contract's ids and {@code event_ts}). */
        ID,
        /** An integer. */
        INTEGER,
        /** A list of integers. */
        INTEGERS;

        boolean integral() {
            return this == ID || this == INTEGER || this == INTEGERS;
        }
    }

    /**
     * The declared fields by the object holding them ({@code ""}: the line's own), each with its kind:
     * one lookup per field, and no path built unless a field is wrong.
     */
    private static final class Fields {
        private final Map<String, Map<String, Kind>> byObject = new HashMap<>();

        Fields(String commaSeparated) {
            for (String spec : commaSeparated.split(",")) {
                int equals = spec.indexOf('=');
                String path = spec.substring(0, equals);
                int dot = path.lastIndexOf('.');
                String object = dot < 0 ? "" : path.substring(0, dot);
                Kind kind = Kind.valueOf(spec.substring(equals + 1).toUpperCase(Locale.ROOT));
                byObject.computeIfAbsent(object, k -> new HashMap<>()).put(path.substring(dot + 1), kind);
            }
        }

        /** The declared fields of {@code object} with their kinds; empty when none. */
        Map<String, Kind> of(String object) {
            return byObject.getOrDefault(object, Map.of());
        }
    }

    /** What one pass over a line found besides its keys and unknown fields. */
    private static final class Findings {
        private final List<String> mistyped = new ArrayList<>(0);
        private boolean normalize;
    }

    @Override
    public Row call(String line, String known, String nested, String nestedKnown, String declared)
            throws IOException {
        Set<String> top = names(known);
        Set<String> inner = names(nestedKnown);
        Fields fields = FIELDS.computeIfAbsent(declared, Fields::new);
        Map<String, Kind> own = fields.of("");
        List<String> keys = new ArrayList<>(16);
        Findings found = new Findings();
        Map<String, String> extra = null;
        Map<String, String> extraNested = null;
        boolean replaced = line.indexOf('\uFFFD') >= 0;
        try (JsonParser parser = FACTORY.createParser(line)) {
            try {
                if (parser.nextToken() != JsonToken.START_OBJECT) {
                    return problem(replaced, parser.currentToken() == null ? "empty line" : "not an object");
                }
                JsonToken token;
                while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
                    String name = parser.currentName();
                    keys.add(name);
                    JsonToken value = parser.nextToken();
                    if (!top.contains(name)) {
                        extra = put(extra, name, text(parser, value));
                    } else if (name.equals(nested)) {
                        extraNested = value == JsonToken.START_OBJECT
                                ? unknown(parser, name, inner, fields.of(name), found) : skip(parser);
                    } else if (value == JsonToken.START_OBJECT && !own.containsKey(name)) {
                        typed(parser, name, fields.of(name), found);
                    } else {
                        check(parser, "", name, value, own, found);
                    }
                }
                if (token != JsonToken.END_OBJECT) {
                    return problem(replaced, "invalid JSON");
                }
            } catch (IOException e) {
                return problem(replaced, "invalid JSON");
            }
            try {
                if (parser.nextToken() != null) {
                    return problem(replaced, "text after the object");
                }
            } catch (IOException e) {
                return problem(replaced, "text after the object");
            }
        }
        return RowFactory.create(null, keys.toArray(new String[0]), extra, extraNested, replaced,
                found.mistyped.isEmpty() ? null : found.mistyped.toArray(new String[0]),
                found.normalize && found.mistyped.isEmpty() ? normalized(line, fields) : null);
    }

    /**
     * Spark's JSON options as bronze's {@code from_json} gets them: {@code NaN} is no JSON number. (Scala's
     * {@code updated} widens the value type, which Java sees as a raw map.)
     */
    @SuppressWarnings("unchecked")
    private static scala.collection.immutable.Map<String, String> options() {
        return (scala.collection.immutable.Map<String, String>) scala.collection.immutable.Map$.MODULE$
                .<String, String>empty().updated("allowNonNumericNumbers", "false");
    }

    private static Set<String> names(String commaSeparated) {
        return NAMES.computeIfAbsent(commaSeparated, s -> Set.of(s.split(",")));
    }

    private static Row problem(boolean replaced, String why) {
        return RowFactory.create(why, null, null, null, replaced, null, null);
    }

    /**
     * The unknown fields of the object {@code path} the parser is at (its START_OBJECT), or NULL; its
     * declared fields {@code kinds} are checked into {@code found}.
     */
    private static Map<String, String> unknown(JsonParser parser, String path, Set<String> known,
                                               Map<String, Kind> kinds, Findings found) throws IOException {
        Map<String, String> extra = null;
        while (parser.nextToken() == JsonToken.FIELD_NAME) {
            String name = parser.currentName();
            JsonToken value = parser.nextToken();
            if (known.contains(name)) {
                check(parser, path, name, value, kinds, found);
            } else {
                extra = put(extra, name, text(parser, value));
            }
        }
        return extra;
    }

    /** Checks the declared fields {@code kinds} of the object {@code path} the parser is at (its START_OBJECT). */
    private static void typed(JsonParser parser, String path, Map<String, Kind> kinds, Findings found)
            throws IOException {
        if (kinds.isEmpty()) {
            parser.skipChildren();
            return;
        }
        while (parser.nextToken() == JsonToken.FIELD_NAME) {
            String name = parser.currentName();
            check(parser, path, name, parser.nextToken(), kinds, found);
        }
    }

    /**
     * Adds the field {@code name} of the object {@code parent} to the mistyped ones when it is one of
     * its declared fields {@code kinds} holding what its kind does not allow; skips the value either way.
     */
    private static void check(JsonParser parser, String parent, String name, JsonToken value,
                              Map<String, Kind> kinds, Findings found) throws IOException {
        Kind kind = kinds.get(name);
        boolean ok = true;
        if (kind == null) {
            parser.skipChildren();
        } else if (value == JsonToken.START_ARRAY && (kind == Kind.TEXTS || kind == Kind.INTEGERS)) {
            Kind item = kind == Kind.TEXTS ? Kind.TEXT : Kind.INTEGER;
            JsonToken token;
            while ((token = parser.nextToken()) != JsonToken.END_ARRAY && token != null) {
                ok &= allows(item, parser, token, found);
                parser.skipChildren();
            }
        } else {
            ok = kind != Kind.INTEGERS ? allows(kind, parser, value, found) : value == JsonToken.VALUE_NULL;
            parser.skipChildren();
        }
        if (!ok) {
            found.mistyped.add(parent.isEmpty() ? name : parent + "." + name);
        }
    }

    /**
     * Whether a single value of a field of {@code kind} may be {@code value}: null, a string or a
     * number in text ({@code TEXT}, {@code TEXTS}), null, a string or an integer in an {@code ID}, null
     * or an integer in an {@code INTEGER}. An integral number written as {@code 2.0} counts as an
     * integer and marks the line to be normalized.
     */
    private static boolean allows(Kind kind, JsonParser parser, JsonToken value, Findings found) throws IOException {
        if (value == JsonToken.VALUE_NULL || value == JsonToken.VALUE_NUMBER_INT) {
            return true;
        }
        if (value == JsonToken.VALUE_STRING) {
            return kind != Kind.INTEGER;
        }
        if (value != JsonToken.VALUE_NUMBER_FLOAT) {
            return false;
        }
        if (!kind.integral()) {
            return true;
        }
        boolean integral = integral(parser);
        found.normalize |= integral;
        return integral;
    }

    /** Whether the number the parser is at is an integer of at most {@code MAX_INTEGER_DIGITS} digits. */
    private static boolean integral(JsonParser parser) throws IOException {
        BigDecimal number = parser.getDecimalValue();
        return number.precision() - number.scale() <= MAX_INTEGER_DIGITS
                && (number.signum() == 0 || number.stripTrailingZeros().scale() <= 0);
    }

    /** {@code line} with the integral numbers of its integer fields written as integers. */
    private static String normalized(String line, Fields fields) throws IOException {
        StringWriter out = new StringWriter(line.length());
        try (JsonParser parser = FACTORY.createParser(line); JsonGenerator generator = FACTORY.createGenerator(out)) {
            parser.nextToken();
            copy(parser, generator, "", fields);
        }
        return out.toString();
    }

    /**
     * Copies the object {@code path} the parser is at (its START_OBJECT), and the objects in the line's
     * own, writing the integral numbers of their integer fields as integers.
     */
    private static void copy(JsonParser parser, JsonGenerator generator, String path, Fields fields)
            throws IOException {
        Map<String, Kind> kinds = fields.of(path);
        generator.writeStartObject();
        while (parser.nextToken() == JsonToken.FIELD_NAME) {
            String name = parser.currentName();
            generator.writeFieldName(name);
            JsonToken value = parser.nextToken();
            Kind kind = kinds.get(name);
            if (kind == null && value == JsonToken.START_OBJECT && path.isEmpty()) {
                copy(parser, generator, name, fields);
            } else if (kind == null || !kind.integral()) {
                generator.copyCurrentStructure(parser);
            } else if (value == JsonToken.START_ARRAY) {
                generator.writeStartArray();
                while (parser.nextToken() != JsonToken.END_ARRAY) {
                    integer(parser, generator);
                }
                generator.writeEndArray();
            } else {
                integer(parser, generator);
            }
        }
        generator.writeEndObject();
    }

    /** Copies the value the parser is at, a number with a fraction or exponent written as the integer it is. */
    private static void integer(JsonParser parser, JsonGenerator generator) throws IOException {
        if (parser.currentToken() == JsonToken.VALUE_NUMBER_FLOAT) {
            generator.writeNumber(parser.getDecimalValue().toBigIntegerExact());
        } else {
            generator.copyCurrentStructure(parser);
        }
    }

    private static Map<String, String> skip(JsonParser parser) throws IOException {
        parser.skipChildren();
        return null;
    }

    private static Map<String, String> put(Map<String, String> map, String name, String value) {
        Map<String, String> into = map == null ? new LinkedHashMap<>() : map;
        into.put(name, value);
        return into;
    }

    /** A value as Spark's JSON reader renders it into a string field. */
    private static String text(JsonParser parser, JsonToken value) throws IOException {
        if (value == JsonToken.VALUE_STRING) {
            return parser.getText();
        }
        if (value == JsonToken.VALUE_NULL) {
            return null;
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (JsonGenerator generator = FACTORY.createGenerator(out, JsonEncoding.UTF8)) {
            generator.copyCurrentStructure(parser);
        }
        return out.toString(StandardCharsets.UTF_8);
    }
}
