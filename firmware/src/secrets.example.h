// Copy to secrets.h (ignored by git) and fill in:  cp src/secrets.example.h src/secrets.h
// The MQTT user and password are the ones in the Secret named by the SensorNode's
// spec.credentials.secretRef (examples/plant/nodes.yaml: esp32-press-01-mqtt).
#pragma once

#define PW_WIFI_SSID "plant-wifi"
#define PW_WIFI_PASSWORD "change-me"
#define PW_MQTT_HOST "192.168.10.2"
#define PW_MQTT_PORT 1883
#define PW_MQTT_USER "esp32-press-01"
#define PW_MQTT_PASSWORD "change-me"
#define PW_DEVICE_ID "esp32-press-01"  // the SensorNode's name; also the MQTT client id
#define PW_AREA "hall-1"               // topics: sensors/<area>/<device>/data and .../status
#define PW_INTERVAL_MS 1000            // the SensorNode's spec.heartbeat.interval

// Optional (defaults in main.cpp):
// #define PW_NTP_SERVER "192.168.10.1"   // default pool.ntp.org; use the plant's if it has one
// #define PW_BACKLOG_READINGS 600        // readings kept while the broker is unreachable
// #define PW_PIN_DS18B20 4
// #define PW_PIN_ACS712 34
// #define PW_PIN_BATTERY 35
// #define PW_SIMULATED_SENSORS           // a bench board with no sensors: publish a slow wave
