package io.recsys.bronze;

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF5;
import org.apache.spark.sql.catalyst.json.JSONOptions;

/**
 * The shape of one landing line, read in one streaming pass: whether it is exactly one JSON object,
 * the names of its fields, and the fields nobody declared, at the top level and in one nested object.
 *
 * <p>Bronze parses each line's values with Spark's {@code from_json} and the declared schema; this
 * finds what that parse cannot say. Arguments: the line, the declared top-level names
 * (comma-separated), the name of the nested object whose unknown fields are kept too, that
 * object's declared names, and the declared text fields (comma-separated paths such as
 * {@code card.artist_name}; a path ending in {@code []} may also hold a list of them). It returns a
 * row {@code (problem, keys, extra, extra_nested, replaced, mistyped)}:
 * <ul>
 *   <li>{@code problem}: NULL for one JSON object, else why the line is not one: {@code invalid JSON},
 *   {@code empty line}, {@code not an object}, {@code text after the object} (two events run
 *   together, say: {@code from_json} alone reads the first and drops the second);</li>
 *   <li>{@code keys}: the object's field names in order, repeats included;</li>
 *   <li>{@code extra}, {@code extra_nested}: the unknown fields with their values as text, or NULL
 *   when there are none. A repeated unknown field keeps its last value, as the schema parse does
 *   for declared fields;</li>
 *   <li>{@code replaced}: whether the line holds U+FFFD, the character Spark's decoding puts where
 *   the line's bytes are not UTF-8. A line may also carry that character itself, so only these
 *   lines need their bytes checked, and the rest of a batch pays one {@code indexOf}.</li>
 *   <li>{@code mistyped}: the text fields holding {@code true}, {@code false}, an object or a list
 *   (a listed field: a list holding one of those), or NULL when there are none. Spark renders any
 *   JSON value into a string field, so {@code from_json} alone would read {@code "user_id": true}
 *   as the user {@code "true"}. A number stays allowed, as the contract's ids need.</li>
 * </ul>
 * Values are rendered as Spark renders a JSON value into a string field (a string's own text, JSON
 * NULL as NULL, anything else as compact JSON), and the parser is built from Spark's own JSON
 * options, so a line is read here exactly as {@code from_json} reads it.
 */
public final class LineShape implements UDF5<String, String, String, String, String, Row> {
    private static final long serialVersionUID = 1L;

    private static final JsonFactory FACTORY = new JSONOptions(
            scala.collection.immutable.Map$.MODULE$.<String, String>empty(), "UTC", "_corrupt_record")
            .buildJsonFactory();
    private static final Map<String, Set<String>> NAMES = new ConcurrentHashMap<>();
    private static final Map<String, Texts> TEXTS = new ConcurrentHashMap<>();

    /**
     * The declared text fields by the object holding them ({@code ""}: the line's own), each mapped
     * to whether it may be a list: one lookup per field, and no path built unless a field is wrong.
     */
    private static final class Texts {
        private final Map<String, Map<String, Boolean>> byObject = new HashMap<>();

        Texts(String commaSeparated) {
            for (String path : commaSeparated.split(",")) {
                boolean listed = path.endsWith("[]");
                String field = listed ? path.substring(0, path.length() - 2) : path;
                int dot = field.lastIndexOf('.');
                String object = dot < 0 ? "" : field.substring(0, dot);
                byObject.computeIfAbsent(object, k -> new HashMap<>()).put(field.substring(dot + 1), listed);
            }
        }

        /** The text fields of {@code object} with whether each may be a list; empty when none. */
        Map<String, Boolean> of(String object) {
            return byObject.getOrDefault(object, Map.of());
        }
    }

    @Override
    public Row call(String line, String known, String nested, String nestedKnown, String textual)
            throws IOException {
        Set<String> top = names(known);
        Set<String> inner = names(nestedKnown);
        Texts texts = TEXTS.computeIfAbsent(textual, Texts::new);
        Map<String, Boolean> text = texts.of("");
        List<String> keys = new ArrayList<>(16);
        List<String> mistyped = new ArrayList<>(0);
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
                                ? unknown(parser, name, inner, texts.of(name), mistyped) : skip(parser);
                    } else if (value == JsonToken.START_OBJECT && !text.containsKey(name)) {
                        typed(parser, name, texts.of(name), mistyped);
                    } else {
                        check(parser, "", name, value, text, mistyped);
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
                mistyped.isEmpty() ? null : mistyped.toArray(new String[0]));
    }

    private static Set<String> names(String commaSeparated) {
        return NAMES.computeIfAbsent(commaSeparated, s -> Set.of(s.split(",")));
    }

    private static Row problem(boolean replaced, String why) {
        return RowFactory.create(why, null, null, null, replaced, null);
    }

    /**
     * The unknown fields of the object {@code path} the parser is at (its START_OBJECT), or NULL; its
     * mistyped text fields are added to {@code mistyped}.
     */
    private static Map<String, String> unknown(JsonParser parser, String path, Set<String> known,
                                               Map<String, Boolean> text, List<String> mistyped)
            throws IOException {
        Map<String, String> found = null;
        while (parser.nextToken() == JsonToken.FIELD_NAME) {
            String name = parser.currentName();
            JsonToken value = parser.nextToken();
            if (known.contains(name)) {
                check(parser, path, name, value, text, mistyped);
            } else {
                found = put(found, name, text(parser, value));
            }
        }
        return found;
    }

    /** Checks the text fields of the object {@code path} the parser is at (its START_OBJECT). */
    private static void typed(JsonParser parser, String path, Map<String, Boolean> text, List<String> mistyped)
            throws IOException {
        if (text.isEmpty()) {
            parser.skipChildren();
            return;
        }
        while (parser.nextToken() == JsonToken.FIELD_NAME) {
            String name = parser.currentName();
            check(parser, path, name, parser.nextToken(), text, mistyped);
        }
    }

    /**
     * Adds the field {@code name} of the object {@code parent} to {@code mistyped} when it is one of
     * its text fields {@code text} holding what no text is; skips the value either way.
     */
    private static void check(JsonParser parser, String parent, String name, JsonToken value,
                              Map<String, Boolean> text, List<String> mistyped) throws IOException {
        Boolean listed = text.get(name);
        boolean ok = true;
        if (listed == null) {
            parser.skipChildren();
        } else if (value == JsonToken.START_ARRAY && listed) {
            JsonToken item;
            while ((item = parser.nextToken()) != JsonToken.END_ARRAY && item != null) {
                ok &= scalar(item);
                parser.skipChildren();
            }
        } else {
            ok = scalar(value);
            parser.skipChildren();
        }
        if (!ok) {
            mistyped.add(parent.isEmpty() ? name : parent + "." + name);
        }
    }

    /** Whether a value can stand in a text field: a string, a number or null. */
    private static boolean scalar(JsonToken value) {
        return value == JsonToken.VALUE_STRING || value == JsonToken.VALUE_NULL || value != null && value.isNumeric();
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
