// ESP32 sensor node: reads the press's sensors every interval and publishes the flat JSON
// the gateway decodes as `esp32-json`. The payload, the outage buffer and the reconnect
// backoff live in the portable core (lib/plantwatch_core), tested on the host.
#include <Arduino.h>
#include <PubSubClient.h>
#include <WiFi.h>
#include <esp_random.h>
#include <time.h>

#include "plantwatch/backoff.h"
#include "plantwatch/payload.h"
#include "plantwatch/ring_buffer.h"
#include "secrets.h"

namespace {

// Sensor glue: replace with the board's real drivers (DS18B20, ADXL345, ACS712, ...).
struct Sample {
  int64_t unix_time;
  float temperature_c, vibration_g, current_a, battery_voltage;
  bool temperature_ok, vibration_ok, current_ok;
};

constexpr int kTemperaturePin = 34, kVibrationPin = 35, kCurrentPin = 32, kBatteryPin = 33;

float volts(int pin) { return analogReadMilliVolts(pin) / 1000.0f; }

Sample read_sensors(int64_t now) {
  Sample s{};
  s.unix_time = now;
  float t = volts(kTemperaturePin);
  s.temperature_ok = t > 0.05f;                      // a disconnected probe reads ~0 V
  s.temperature_c = (t - 0.5f) * 100.0f;             // TMP36: 10 mV/°C, 500 mV offset
  s.vibration_g = fabsf(volts(kVibrationPin) - 1.65f) / 0.3f;  // ±3 g analog accelerometer
  s.vibration_ok = true;
  float i = volts(kCurrentPin);
  s.current_ok = i > 0.05f;
  s.current_a = fabsf(i - 1.65f) / 0.066f;           // ACS712-30A on a 3.3 V divider
  s.battery_voltage = volts(kBatteryPin) * 2.0f;     // 1:2 divider
  return s;
}

std::string payload_of(const Sample& s) {
  return plantwatch::build_payload(PW_DEVICE_ID, s.unix_time, {
      {"temperature_c", s.temperature_c, s.temperature_ok},
      {"vibration_g", s.vibration_g, s.vibration_ok},
      {"current_a", s.current_a, s.current_ok},
      {"battery_voltage", s.battery_voltage, true},
  });
}

WiFiClient wifi;
PubSubClient mqtt(wifi);
plantwatch::RingBuffer<Sample, 600> backlog;  // 10 minutes at 1 Hz survive a broker outage
plantwatch::Backoff backoff(500, 30000, [](uint32_t n) { return n ? esp_random() % (n + 1) : 0; });
const std::string data_topic = plantwatch::data_topic(PW_AREA, PW_DEVICE_ID);
const std::string status_topic = plantwatch::status_topic(PW_AREA, PW_DEVICE_ID);
uint32_t next_connect_ms = 0, next_sample_ms = 0;

bool connect() {
  if (WiFi.status() != WL_CONNECTED) return false;
  // Last Will: the broker marks the node offline if it vanishes.
  if (!mqtt.connect(PW_DEVICE_ID, PW_MQTT_USER, PW_MQTT_PASSWORD, status_topic.c_str(), 1, true, "offline")) return false;
  mqtt.publish(status_topic.c_str(), "online", true);
  return true;
}

}  // namespace

void setup() {
  Serial.begin(115200);
  WiFi.mode(WIFI_STA);
  WiFi.begin(PW_WIFI_SSID, PW_WIFI_PASSWORD);
  configTime(0, 0, "pool.ntp.org");  // the gateway refuses readings far from its clock
  mqtt.setServer(PW_MQTT_HOST, PW_MQTT_PORT);
}

void loop() {
  uint32_t ms = millis();
  if (!mqtt.connected() && ms >= next_connect_ms) {
    if (connect()) {
      backoff.reset();
    } else {
      next_connect_ms = ms + backoff.next_delay_ms();
    }
  }
  mqtt.loop();
  time_t now = time(nullptr);
  if (ms >= next_sample_ms && now > 1700000000) {  // sample only once NTP has set the clock
    next_sample_ms = ms + PW_INTERVAL_MS;
    if (!backlog.push(read_sensors(now))) Serial.printf("backlog full: %u readings dropped\n", backlog.dropped());
  }
  // Oldest first, so the gateway stores the outage in order; stop at the first failure.
  while (mqtt.connected() && !backlog.empty()) {
    if (!mqtt.publish(data_topic.c_str(), payload_of(backlog.front()).c_str())) break;
    Sample sent;
    backlog.pop(sent);
  }
}
