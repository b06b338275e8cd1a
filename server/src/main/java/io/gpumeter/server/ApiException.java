package io.gpumeter.server;

import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.util.AsciiString;

/**
 * An error answered in OpenAI's shape, {@code {"error":{"message","type","param","code"}}}, with
 * its HTTP status. Thrown anywhere in request handling; {@link ApiHandler} turns it into the
 * response. No stack trace: these are expected outcomes, not bugs.
 */
final class ApiException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  static final String INVALID_REQUEST = "invalid_request_error";
  static final String RATE_LIMIT = "rate_limit_error";
  static final String SERVER = "server_error";

  private final transient HttpResponseStatus status;
  private final String type;
  private final String param;
  private final String code;
  private AsciiString headerName;
  private String headerValue;

  ApiException(HttpResponseStatus status, String type, String message, String param, String code) {
    super(message, null, false, false);
    this.status = status;
    this.type = type;
    this.param = param;
    this.code = code;
  }

  /** 400 invalid_request_error about one request parameter. */
  static ApiException invalid(String param, String message) {
    return new ApiException(
        HttpResponseStatus.BAD_REQUEST, INVALID_REQUEST, message, param, "invalid_value");
  }

  /** 400 for a parameter of the wrong JSON type. */
  static ApiException wrongType(String param, String expected, String actual) {
    return new ApiException(
        HttpResponseStatus.BAD_REQUEST,
        INVALID_REQUEST,
        "'" + param + "' must be " + expected + ", got " + actual,
        param,
        "invalid_type");
  }

  /** 400 for a required parameter that is absent. */
  static ApiException missing(String param) {
    return new ApiException(
        HttpResponseStatus.BAD_REQUEST,
        INVALID_REQUEST,
        "you must provide a '" + param + "' parameter",
        param,
        "missing_required_parameter");
  }

  /** Adds one response header (Allow for 405, Retry-After for 429). */
  ApiException withHeader(AsciiString name, String value) {
    this.headerName = name;
    this.headerValue = value;
    return this;
  }

  AsciiString headerName() {
    return headerName;
  }

  String headerValue() {
    return headerValue;
  }

  HttpResponseStatus status() {
    return status;
  }

  String type() {
    return type;
  }

  String param() {
    return param;
  }

  String code() {
    return code;
  }
}
